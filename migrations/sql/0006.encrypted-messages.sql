-- End-to-end encrypted messages (docs/decisions.md, "Encrypted messages"). A message is text
-- (content) or an encrypted envelope (encrypted: the envelope's JSON as the server stores and
-- delivers it, never read by the database or the services), exactly one of the two until it
-- is deleted; a tombstone has neither. An edit of an encrypted message carries a new envelope.
-- depends: 0005.user-keys

ALTER TABLE chat_messages ADD COLUMN encrypted bytea;
ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_tombstone;
-- a tombstone and only a tombstone has neither text nor envelope; a message never has both
ALTER TABLE chat_messages ADD CONSTRAINT chat_messages_tombstone
    CHECK ((content IS NULL AND encrypted IS NULL) = (deleted_at IS NOT NULL));
ALTER TABLE chat_messages ADD CONSTRAINT chat_messages_text_or_envelope
    CHECK (content IS NULL OR encrypted IS NULL);

ALTER TABLE chat_message_changes ADD COLUMN encrypted bytea;
ALTER TABLE chat_message_changes DROP CONSTRAINT chat_message_changes_delete_has_no_content;
ALTER TABLE chat_message_changes ADD CONSTRAINT chat_message_changes_delete_has_no_content
    CHECK (kind = 'edit' OR (content IS NULL AND encrypted IS NULL));
ALTER TABLE chat_message_changes ADD CONSTRAINT chat_message_changes_text_or_envelope
    CHECK (content IS NULL OR encrypted IS NULL);
