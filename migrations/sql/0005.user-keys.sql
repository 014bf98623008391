-- The public-key registry of end-to-end encryption (docs/decisions.md, "Public keys"): each
-- user's public keys, one per device under an id the client chose. A revoked key keeps its row
-- (revoked_at set) until it is pruned; a later publish under the same id brings it back.
-- version comes from one sequence and is drawn under the user's lock, so a later change of a
-- user's keys always has a higher version (clients order the key events by it).
-- depends: 0004.message-changes

CREATE SEQUENCE chat_user_key_versions;

CREATE TABLE chat_user_keys (
    user_email  text NOT NULL,
    key_id      text NOT NULL,
    algorithm   text NOT NULL,
    -- the raw public key (its fingerprint, SHA-256 of these bytes, is computed when read)
    public_key  bytea NOT NULL,
    version     bigint NOT NULL DEFAULT nextval('chat_user_key_versions'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    PRIMARY KEY (user_email, key_id),
    CONSTRAINT chat_user_keys_key_id CHECK (key_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    CONSTRAINT chat_user_keys_raw_size CHECK (
        (algorithm = 'X25519' AND octet_length(public_key) = 32)
        OR (algorithm = 'ECDH-P256' AND octet_length(public_key) = 65)
    )
);
ALTER SEQUENCE chat_user_key_versions OWNED BY chat_user_keys.version;
