-- Closed sessions open again (their erased participant stays anonymised: erasure is not undone).
ALTER TABLE chat_sessions DROP CONSTRAINT chat_sessions_closed;
ALTER TABLE chat_sessions DROP COLUMN closed_reason;
ALTER TABLE chat_sessions DROP COLUMN closed_at;
ALTER TABLE chat_participants DROP COLUMN erased_at;
