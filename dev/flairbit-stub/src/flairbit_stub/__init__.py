"""Development stand-in for FlairBit: dev user tokens and profile look-ups (never deployed)."""
