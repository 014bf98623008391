-- The outbox row state machine has a claimed state (a relay holds the row under a lease).
-- depends: 0001.initial-schema

ALTER TABLE chat_message_outbox DROP CONSTRAINT chat_outbox_status;
ALTER TABLE chat_message_outbox ADD CONSTRAINT chat_outbox_status
    CHECK (status IN ('pending', 'claimed', 'published', 'dead'));
ALTER TABLE chat_message_outbox ADD CONSTRAINT chat_outbox_claim
    CHECK ((status = 'claimed') = (claim_token IS NOT NULL AND lease_until IS NOT NULL));

DROP INDEX chat_outbox_pending;
DROP INDEX chat_outbox_pending_by_session;
-- what the relay claims and what blocks a session's later rows: only unpublished rows
CREATE INDEX chat_outbox_unpublished ON chat_message_outbox (id)
    WHERE status IN ('pending', 'claimed');
CREATE INDEX chat_outbox_unpublished_by_session ON chat_message_outbox (session_id, id)
    WHERE status IN ('pending', 'claimed');
CREATE INDEX chat_outbox_dead ON chat_message_outbox (id) WHERE status = 'dead';
