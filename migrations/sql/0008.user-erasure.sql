-- Erasure of a user FlairBit deleted (docs/decisions.md, "Erasure of a deleted user"). The
-- user's participant rows stay (every session has two) but are anonymised: a random placeholder
-- instead of the email, profile id and display name, and erased_at set. Each session the user
-- was in is closed for the peer: closed_at and closed_reason (PARTICIPANT_DELETED); nothing is
-- sent, changed, subscribed to or typed in a closed session, and it never opens again.
-- depends: 0007.session-blocks

ALTER TABLE chat_participants ADD COLUMN erased_at timestamptz;
ALTER TABLE chat_sessions ADD COLUMN closed_at timestamptz;
ALTER TABLE chat_sessions ADD COLUMN closed_reason text;
ALTER TABLE chat_sessions ADD CONSTRAINT chat_sessions_closed
    CHECK ((closed_at IS NULL) = (closed_reason IS NULL));
