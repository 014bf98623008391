-- Blocking within a session (docs/decisions.md, "Blocking"): either participant may block the
-- other in one session (the pair of profiles and its intent); blocked_at is set on the row of
-- the participant who blocks. While a row of the session has it, nothing is sent or changed in
-- the session, neither side subscribes to its topic or types in it, and the two are not each
-- other's presence peers through it. Each participant lifts only their own block.
-- depends: 0006.encrypted-messages

ALTER TABLE chat_participants ADD COLUMN blocked_at timestamptz;
