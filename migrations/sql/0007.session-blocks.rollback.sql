-- Blocks are forgotten with the column (every blocked session opens again).
ALTER TABLE chat_participants DROP COLUMN blocked_at;
