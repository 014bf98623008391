-- Edits and deletes of messages (docs/decisions.md, "Edits and deletes"). A change is an event
-- with its own seq in the session, allocated from chat_sessions.last_seq like a message's, so
-- every seq of a session is either a message (chat_messages) or a change of one
-- (chat_message_changes): the session's order stays gapless. The message row holds the
-- current state: its content (NULL once deleted: the text is gone, not hidden), edited_at and
-- deleted_at.
-- depends: 0003.outbox-rotating-partitions

ALTER TABLE chat_messages ALTER COLUMN content DROP NOT NULL;
ALTER TABLE chat_messages ADD COLUMN edited_at timestamptz;
ALTER TABLE chat_messages ADD COLUMN deleted_at timestamptz;
-- a tombstone and only a tombstone has no content
ALTER TABLE chat_messages ADD CONSTRAINT chat_messages_tombstone
    CHECK ((content IS NULL) = (deleted_at IS NOT NULL));

CREATE TABLE chat_message_changes (
    session_id     uuid NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    seq            bigint NOT NULL,
    message_id     uuid NOT NULL REFERENCES chat_messages (id) ON DELETE CASCADE,
    kind           text NOT NULL,
    -- who made the change (only the message's sender may), and the change's own client id
    sender_email   text NOT NULL,
    client_msg_id  uuid NOT NULL,
    -- an edit's new text; NULL for a delete, and for every edit of a message deleted since
    content        text,
    changed_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chat_message_changes_key PRIMARY KEY (session_id, seq),
    CONSTRAINT chat_message_changes_client_id_unique UNIQUE (sender_email, client_msg_id),
    CONSTRAINT chat_message_changes_kind CHECK (kind IN ('edit', 'delete')),
    CONSTRAINT chat_message_changes_seq_positive CHECK (seq > 0),
    CONSTRAINT chat_message_changes_delete_has_no_content CHECK (kind = 'edit' OR content IS NULL)
);
-- the changes of one message (a delete clears its edits' text)
CREATE INDEX chat_message_changes_by_message ON chat_message_changes (message_id);
