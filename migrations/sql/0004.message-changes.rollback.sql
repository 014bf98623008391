-- Back to messages without edits and deletes. A tombstone keeps its place with empty content
-- (its text is gone for good), edited messages keep their current text, and the changes' seqs
-- become holes in their sessions' order: the edges skip a hole after their gap-fill attempts
-- (GAP_FILL_ATTEMPTS), so resumed subscriptions see the messages around it.
DROP TABLE chat_message_changes;
ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_tombstone;
UPDATE chat_messages SET content = '' WHERE content IS NULL;
ALTER TABLE chat_messages ALTER COLUMN content SET NOT NULL;
ALTER TABLE chat_messages DROP COLUMN deleted_at;
ALTER TABLE chat_messages DROP COLUMN edited_at;
