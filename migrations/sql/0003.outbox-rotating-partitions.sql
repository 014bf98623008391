-- The outbox as a rotating queue that needs no VACUUM (docs/decisions.md, "A lean outbox").
-- Every row of chat_message_outbox is waiting to be published: the relay deletes a row once
-- the broker confirmed it, in the transaction that claimed it (no status column, no claimed or
-- published state written). The table is partitioned by slot; new rows go to the current slot
-- (chat_outbox_state), the relay moves the current slot along every few seconds and empties
-- the others with TRUNCATE once they hold no row, so their dead rows and index entries are
-- given back whatever autovacuum does. Dead rows (publish attempts used up) move to
-- chat_message_outbox_dead.
-- depends: 0002.outbox-claimed-state

CREATE TABLE chat_outbox_state (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    slot        smallint NOT NULL DEFAULT 0 CHECK (slot BETWEEN 0 AND 2),
    rotated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO chat_outbox_state DEFAULT VALUES;

CREATE FUNCTION chat_outbox_slot() RETURNS smallint
    LANGUAGE sql STABLE AS 'SELECT slot FROM chat_outbox_state';

ALTER TABLE chat_message_outbox RENAME TO chat_message_outbox_before_0003;

CREATE SEQUENCE chat_message_outbox_ids;

CREATE TABLE chat_message_outbox (
    slot           smallint NOT NULL DEFAULT chat_outbox_slot(),
    id             bigint NOT NULL DEFAULT nextval('chat_message_outbox_ids'),
    -- rows of one session are published in id order; NULL means unordered
    session_id     uuid,
    exchange       text NOT NULL DEFAULT 'chat.events',
    routing_key    text NOT NULL,
    event_type     text NOT NULL,
    headers        jsonb NOT NULL DEFAULT '{}'::jsonb,
    payload        bytea NOT NULL,
    retry_count    integer NOT NULL DEFAULT 0,
    next_retry_at  timestamptz NOT NULL DEFAULT now(),
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chat_message_outbox_key PRIMARY KEY (slot, id)
) PARTITION BY LIST (slot);
ALTER SEQUENCE chat_message_outbox_ids OWNED BY chat_message_outbox.id;
CREATE TABLE chat_message_outbox_0 PARTITION OF chat_message_outbox FOR VALUES IN (0);
CREATE TABLE chat_message_outbox_1 PARTITION OF chat_message_outbox FOR VALUES IN (1);
CREATE TABLE chat_message_outbox_2 PARTITION OF chat_message_outbox FOR VALUES IN (2);
-- what the relay claims, in id order
CREATE INDEX chat_outbox_by_id ON chat_message_outbox (id);
-- what holds a session's later rows back: an earlier row of it
CREATE INDEX chat_outbox_by_session ON chat_message_outbox (session_id, id);
-- rows in backoff (only rows that failed at least once)
CREATE INDEX chat_outbox_retrying ON chat_message_outbox (session_id, id) WHERE retry_count > 0;

CREATE TABLE chat_message_outbox_dead (
    id             bigint PRIMARY KEY,
    session_id     uuid,
    exchange       text NOT NULL,
    routing_key    text NOT NULL,
    event_type     text NOT NULL,
    headers        jsonb NOT NULL,
    payload        bytea NOT NULL,
    retry_count    integer NOT NULL,
    last_error     text,
    created_at     timestamptz NOT NULL,
    died_at        timestamptz NOT NULL DEFAULT now()
);

INSERT INTO chat_message_outbox (slot, id, session_id, exchange, routing_key, event_type,
                                 headers, payload, retry_count, next_retry_at, last_error,
                                 created_at)
SELECT 0, id, session_id, exchange, routing_key, event_type, headers, payload, retry_count,
       next_retry_at, last_error, created_at
FROM chat_message_outbox_before_0003 WHERE status IN ('pending', 'claimed');

INSERT INTO chat_message_outbox_dead (id, session_id, exchange, routing_key, event_type, headers,
                                      payload, retry_count, last_error, created_at)
SELECT id, session_id, exchange, routing_key, event_type, headers, payload, retry_count,
       last_error, created_at
FROM chat_message_outbox_before_0003 WHERE status = 'dead';

DO $$ BEGIN
    PERFORM setval('chat_message_outbox_ids',
                   COALESCE((SELECT max(id) FROM chat_message_outbox_before_0003), 0) + 1, false);
END $$;

DROP TABLE chat_message_outbox_before_0003;
