-- Back to text messages only. An encrypted message cannot become text (the server never had
-- it): it becomes a tombstone at its seq (deleted_at set to the time of the rollback), and the
-- envelopes of its edits are dropped.
UPDATE chat_messages SET deleted_at = now(), encrypted = NULL WHERE encrypted IS NOT NULL;
ALTER TABLE chat_message_changes DROP CONSTRAINT chat_message_changes_text_or_envelope;
ALTER TABLE chat_message_changes DROP CONSTRAINT chat_message_changes_delete_has_no_content;
ALTER TABLE chat_message_changes DROP COLUMN encrypted;
ALTER TABLE chat_message_changes ADD CONSTRAINT chat_message_changes_delete_has_no_content
    CHECK (kind = 'edit' OR content IS NULL);

ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_text_or_envelope;
ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_tombstone;
ALTER TABLE chat_messages DROP COLUMN encrypted;
ALTER TABLE chat_messages ADD CONSTRAINT chat_messages_tombstone
    CHECK ((content IS NULL) = (deleted_at IS NOT NULL));
