"""Chat sessions: get-or-create for two profiles, membership checks, FlairBit profile look-ups."""
