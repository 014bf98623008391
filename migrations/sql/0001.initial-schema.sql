-- Initial schema: sessions, participants with their read/delivered marks, messages, outbox.
-- depends:

CREATE TABLE chat_sessions (
    id          uuid PRIMARY KEY,
    intent      text NOT NULL,
    -- the two profiles in canonical order (profile_lo < profile_hi): one row per pair+intent
    profile_lo  uuid NOT NULL,
    profile_hi  uuid NOT NULL,
    -- last allocated message seq; the row lock on it serialises senders of one session
    last_seq    bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chat_sessions_canonical CHECK (profile_lo < profile_hi),
    CONSTRAINT chat_sessions_pair_unique UNIQUE (profile_lo, profile_hi, intent)
);

CREATE TABLE chat_participants (
    session_id     uuid NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    profile_id     uuid NOT NULL,
    user_email     text NOT NULL,
    display_name   text NOT NULL,
    read_seq       bigint NOT NULL DEFAULT 0,
    delivered_seq  bigint NOT NULL DEFAULT 0,
    joined_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, profile_id),
    CONSTRAINT chat_participants_marks CHECK (read_seq >= 0 AND delivered_seq >= 0)
);
CREATE INDEX chat_participants_by_user ON chat_participants (user_email, session_id);

CREATE TABLE chat_messages (
    id                   uuid PRIMARY KEY,
    session_id           uuid NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    seq                  bigint NOT NULL,
    sender_profile_id    uuid NOT NULL,
    sender_email         text NOT NULL,
    sender_display_name  text NOT NULL,
    content              text NOT NULL,
    client_msg_id        uuid NOT NULL,
    sent_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chat_messages_seq_unique UNIQUE (session_id, seq),
    CONSTRAINT chat_messages_client_id_unique UNIQUE (sender_email, client_msg_id),
    CONSTRAINT chat_messages_seq_positive CHECK (seq > 0)
);

CREATE TABLE chat_message_outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- rows of one session are published in id order; NULL means unordered
    session_id     uuid,
    exchange       text NOT NULL DEFAULT 'chat.events',
    routing_key    text NOT NULL,
    event_type     text NOT NULL,
    headers        jsonb NOT NULL DEFAULT '{}'::jsonb,
    payload        bytea NOT NULL,
    status         text NOT NULL DEFAULT 'pending',
    retry_count    integer NOT NULL DEFAULT 0,
    next_retry_at  timestamptz NOT NULL DEFAULT now(),
    claim_token    uuid,
    lease_until    timestamptz,
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    CONSTRAINT chat_outbox_status CHECK (status IN ('pending', 'published', 'dead'))
);
-- what the relay claims: small, only pending rows
CREATE INDEX chat_outbox_pending ON chat_message_outbox (next_retry_at, id)
    WHERE status = 'pending';
CREATE INDEX chat_outbox_pending_by_session ON chat_message_outbox (session_id, id)
    WHERE status = 'pending';
-- what the purge deletes
CREATE INDEX chat_outbox_published ON chat_message_outbox (sent_at)
    WHERE status = 'published';
