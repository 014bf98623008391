DROP INDEX IF EXISTS chat_outbox_dead;
DROP INDEX IF EXISTS chat_outbox_unpublished_by_session;
DROP INDEX IF EXISTS chat_outbox_unpublished;
UPDATE chat_message_outbox SET status = 'pending', claim_token = NULL, lease_until = NULL
    WHERE status = 'claimed';
ALTER TABLE chat_message_outbox DROP CONSTRAINT chat_outbox_claim;
ALTER TABLE chat_message_outbox DROP CONSTRAINT chat_outbox_status;
ALTER TABLE chat_message_outbox ADD CONSTRAINT chat_outbox_status
    CHECK (status IN ('pending', 'published', 'dead'));
CREATE INDEX chat_outbox_pending ON chat_message_outbox (next_retry_at, id)
    WHERE status = 'pending';
CREATE INDEX chat_outbox_pending_by_session ON chat_message_outbox (session_id, id)
    WHERE status = 'pending';
