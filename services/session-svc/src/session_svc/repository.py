"""SQL of sessions and participants. The caller owns the connection and the transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg

from chat_common.db import Conn

from .domain import Pair, Profile


@dataclass(frozen=True, slots=True)
class ParticipantRow:
    profile_id: uuid.UUID
    user_email: str
    display_name: str
    blocked_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: uuid.UUID
    intent: str
    created_at: dt.datetime
    participants: tuple[ParticipantRow, ParticipantRow]
    closed_reason: str | None = None
    """Set when the session closed for good (``PARTICIPANT_DELETED``)."""

    @property
    def blocked_by(self) -> tuple[str, ...]:
        """The participants who block the session, earliest block first."""
        blocking = [p for p in self.participants if p.blocked_at is not None]
        blocking.sort(key=lambda p: (p.blocked_at, p.user_email))
        return tuple(p.user_email for p in blocking)


async def insert_session_if_absent(
    conn: Conn, session_id: uuid.UUID, pair: Pair, intent: str
) -> bool:
    """Insert the session and its two participants unless the pair already has one.

    Concurrent callers for the same pair serialise on the unique constraint: the loser's
    ``ON CONFLICT DO NOTHING`` waits for the winner's commit and then inserts nothing.
    """
    inserted = await conn.fetchval(
        """
        INSERT INTO chat_sessions (id, intent, profile_lo, profile_hi)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (profile_lo, profile_hi, intent) DO NOTHING
        RETURNING true
        """,
        session_id,
        intent,
        pair.low.id,
        pair.high.id,
    )
    if not inserted:
        return False
    await conn.executemany(
        """
        INSERT INTO chat_participants (session_id, profile_id, user_email, display_name)
        VALUES ($1, $2, $3, $4)
        """,
        [(session_id, p.id, p.user_email, p.display_name) for p in (pair.low, pair.high)],
    )
    return True


async def refresh_participant(conn: Conn, session_id: uuid.UUID, p: Profile) -> bool:
    """Keep a participant's display name as FlairBit last described it; True if it changed."""
    status = await conn.execute(
        """
        UPDATE chat_participants SET display_name = $3
        WHERE session_id = $1 AND profile_id = $2 AND display_name <> $3
        """,
        session_id,
        p.id,
        p.display_name,
    )
    return bool(status.endswith(" 1"))


_SESSION_SQL = """
    SELECT s.id, s.intent, s.created_at,
           p.profile_id, p.user_email, p.display_name, p.blocked_at, s.closed_reason
    FROM chat_sessions s
    JOIN chat_participants p ON p.session_id = s.id
"""


def _session_from_rows(rows: list[asyncpg.Record]) -> SessionRow | None:
    if len(rows) != 2:
        return None
    first = rows[0]
    parts = tuple(
        ParticipantRow(r["profile_id"], r["user_email"], r["display_name"], r["blocked_at"])
        for r in rows
    )
    return SessionRow(
        first["id"],
        first["intent"],
        first["created_at"],
        (parts[0], parts[1]),
        first["closed_reason"],
    )


async def find_by_pair(conn: Conn, pair: Pair, intent: str) -> SessionRow | None:
    rows = await conn.fetch(
        _SESSION_SQL
        + " WHERE s.profile_lo = $1 AND s.profile_hi = $2 AND s.intent = $3"
        + " ORDER BY p.profile_id",
        pair.low.id,
        pair.high.id,
        intent,
    )
    return _session_from_rows(rows)


async def find_by_id(conn: Conn, session_id: uuid.UUID) -> SessionRow | None:
    rows = await conn.fetch(_SESSION_SQL + " WHERE s.id = $1 ORDER BY p.profile_id", session_id)
    return _session_from_rows(rows)


async def lock_session(conn: Conn, session_id: uuid.UUID) -> bool:
    """Lock the session's row until the transaction ends (block changes of one session, and
    message-svc's writes to it, serialise on it); False when there is no such session."""
    found = await conn.fetchval(
        "SELECT true FROM chat_sessions WHERE id = $1 FOR UPDATE", session_id
    )
    return bool(found)


async def set_blocked(conn: Conn, session_id: uuid.UUID, user_email: str, blocked: bool) -> None:
    """Record or lift ``user_email``'s block of the session."""
    await conn.execute(
        """
        UPDATE chat_participants SET blocked_at = CASE WHEN $3 THEN now() ELSE NULL END
        WHERE session_id = $1 AND user_email = $2
        """,
        session_id,
        user_email,
        blocked,
    )


# Peers share at least one open session that neither of them blocks.
_PEERS = """
    SELECT DISTINCT other.user_email
    FROM chat_participants me
    JOIN chat_participants other
      ON other.session_id = me.session_id AND other.user_email <> me.user_email
    JOIN chat_sessions s ON s.id = me.session_id
    WHERE me.user_email = $1 AND me.blocked_at IS NULL AND other.blocked_at IS NULL
      AND s.closed_at IS NULL
"""


async def peers_of(conn: Conn, user_email: str, limit: int) -> list[str]:
    """The users who share a session with ``user_email`` that neither blocks (at most
    ``limit``)."""
    rows = await conn.fetch(_PEERS + " LIMIT $2", user_email, limit)
    return [row["user_email"] for row in rows]


async def peers_among(conn: Conn, user_email: str, candidates: list[str]) -> set[str]:
    """Those of ``candidates`` who share a session with ``user_email`` that neither blocks."""
    rows = await conn.fetch(
        _PEERS + " AND other.user_email = ANY($2::text[])", user_email, candidates
    )
    return {row["user_email"] for row in rows}


# -- public keys ------------------------------------------------------------------------------

KEYS_LOCK_CLASS = 0x6B657973  # "keys": the class of the per-user advisory locks below


@dataclass(frozen=True, slots=True)
class KeyRow:
    user_email: str
    key_id: str
    algorithm: str
    public_key: bytes
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    revoked_at: dt.datetime | None


_KEY_COLUMNS = (
    "user_email, key_id, algorithm, public_key, version, created_at, updated_at, revoked_at"
)


def _key(row: asyncpg.Record) -> KeyRow:
    return KeyRow(*(row[i] for i in range(8)))


async def lock_keys(conn: Conn, user_email: str) -> None:
    """Serialise the changes of one user's keys until the transaction ends (the device limit
    is checked and the version drawn under it)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1::int4, hashtext($2))", KEYS_LOCK_CLASS, user_email
    )


async def keys_of(conn: Conn, user_email: str) -> list[KeyRow]:
    """Every key row of the user, revoked ones included."""
    rows = await conn.fetch(
        f"SELECT {_KEY_COLUMNS} FROM chat_user_keys WHERE user_email = $1 ORDER BY created_at",
        user_email,
    )
    return [_key(r) for r in rows]


async def store_key(
    conn: Conn, user_email: str, key_id: str, algorithm: str, public_key: bytes, *, added: bool
) -> KeyRow:
    """Insert the key, or overwrite the row of its id (``added``: a revoked id brought back,
    which starts afresh); a new version either way."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO chat_user_keys (user_email, key_id, algorithm, public_key)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (user_email, key_id) DO UPDATE
        SET algorithm = EXCLUDED.algorithm, public_key = EXCLUDED.public_key,
            version = nextval('chat_user_key_versions'), updated_at = now(), revoked_at = NULL,
            created_at = CASE WHEN $5 THEN now() ELSE chat_user_keys.created_at END
        RETURNING {_KEY_COLUMNS}
        """,
        user_email,
        key_id,
        algorithm,
        public_key,
        added,
    )
    assert row is not None
    return _key(row)


async def revoke_key(conn: Conn, user_email: str, key_id: str) -> KeyRow:
    row = await conn.fetchrow(
        f"""
        UPDATE chat_user_keys
        SET revoked_at = now(), updated_at = now(), version = nextval('chat_user_key_versions')
        WHERE user_email = $1 AND key_id = $2
        RETURNING {_KEY_COLUMNS}
        """,
        user_email,
        key_id,
    )
    assert row is not None
    return _key(row)


async def prune_revoked(conn: Conn, user_email: str, keep: int) -> int:
    """Forget all but the ``keep`` latest revoked keys of the user; how many went."""
    status = await conn.execute(
        """
        DELETE FROM chat_user_keys
        WHERE user_email = $1 AND revoked_at IS NOT NULL AND key_id NOT IN (
            SELECT key_id FROM chat_user_keys
            WHERE user_email = $1 AND revoked_at IS NOT NULL
            ORDER BY revoked_at DESC, key_id LIMIT $2
        )
        """,
        user_email,
        keep,
    )
    return int(status.rsplit(" ", 1)[-1])


async def current_keys(conn: Conn, emails: list[str]) -> list[KeyRow]:
    """The current (not revoked) keys of these users, each user's oldest first."""
    rows = await conn.fetch(
        f"""
        SELECT {_KEY_COLUMNS} FROM chat_user_keys
        WHERE user_email = ANY($1::text[]) AND revoked_at IS NULL
        ORDER BY user_email, created_at, key_id
        """,
        emails,
    )
    return [_key(r) for r in rows]


# -- erasure of a deleted user ------------------------------------------------------------------

CLOSED_BY_DELETION = "PARTICIPANT_DELETED"


@dataclass(frozen=True, slots=True)
class ErasedSession:
    session_id: uuid.UUID
    profile_id: uuid.UUID
    """The user's profile in the session (replaced by the placeholder's)."""
    peer_email: str
    """The other participant (a placeholder when they were erased too)."""
    was_closed: bool
    """Whether the session was closed before this erasure."""


async def lock_sessions_of(conn: Conn, user_email: str) -> list[ErasedSession]:
    """The user's sessions, their rows locked in id order (as message-svc's sends lock them,
    so the two never deadlock); each with the user's profile, the peer and whether it was
    already closed. Read again once the locks are held: an erasure of the same user that
    committed meanwhile has left nothing to find (its events are not touched)."""
    await conn.execute(
        """
        SELECT id FROM chat_sessions
        WHERE id IN (SELECT session_id FROM chat_participants WHERE user_email = $1)
        ORDER BY id
        FOR UPDATE
        """,
        user_email,
    )
    rows = await conn.fetch(
        """
        SELECT s.id, me.profile_id, other.user_email AS peer_email,
               s.closed_at IS NOT NULL AS was_closed
        FROM chat_participants me
        JOIN chat_participants other
          ON other.session_id = me.session_id AND other.profile_id <> me.profile_id
        JOIN chat_sessions s ON s.id = me.session_id
        WHERE me.user_email = $1
        ORDER BY s.id
        FOR UPDATE OF s
        """,
        user_email,
    )
    return [ErasedSession(r["id"], r["profile_id"], r["peer_email"], r["was_closed"]) for r in rows]


Replacement = tuple[uuid.UUID, uuid.UUID, str, uuid.UUID, str]
"""(session id, the user's profile id there, placeholder email, profile id, display name)."""

_MAP = """
    WITH map AS (
        SELECT * FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::uuid[], $6::text[])
            AS m(session_id, old_id, email, profile_id, display_name)
    )
"""


def _columns(replacements: list[Replacement]) -> list[list[object]]:
    return [list(c) for c in zip(*replacements, strict=True)] or [[] for _ in range(5)]


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def anonymise_participant(
    conn: Conn, user_email: str, replacements: list[Replacement]
) -> None:
    """Put each session's placeholder in the user's participant row (lifting the user's
    block) and in the session's canonical pair, and close the session (a closed one keeps its
    first reason)."""
    columns = _columns(replacements)
    await conn.execute(
        _MAP
        + """
        UPDATE chat_participants p
        SET user_email = map.email, profile_id = map.profile_id,
            display_name = map.display_name, erased_at = now(), blocked_at = NULL
        FROM map WHERE p.session_id = map.session_id AND p.user_email = $1
        """,
        user_email,
        *columns,
    )
    await conn.execute(
        _MAP
        + """
        UPDATE chat_sessions s
        SET profile_lo = LEAST(
                CASE WHEN s.profile_lo = map.old_id THEN map.profile_id ELSE s.profile_lo END,
                CASE WHEN s.profile_hi = map.old_id THEN map.profile_id ELSE s.profile_hi END),
            profile_hi = GREATEST(
                CASE WHEN s.profile_lo = map.old_id THEN map.profile_id ELSE s.profile_lo END,
                CASE WHEN s.profile_hi = map.old_id THEN map.profile_id ELSE s.profile_hi END),
            closed_at = COALESCE(s.closed_at, now()),
            closed_reason = COALESCE(s.closed_reason, $7)
        FROM map WHERE s.id = map.session_id AND $1::text IS NOT NULL  -- ($1 typed)
        """,
        user_email,
        *columns,
        CLOSED_BY_DELETION,
    )


async def erase_messages(conn: Conn, user_email: str, replacements: list[Replacement]) -> int:
    """Make the user's messages tombstones (text and envelope gone, the seq kept) sent by the
    session's placeholder; how many."""
    status = await conn.execute(
        _MAP
        + """
        UPDATE chat_messages m
        SET sender_email = map.email, sender_profile_id = map.profile_id,
            sender_display_name = map.display_name, content = NULL, encrypted = NULL,
            deleted_at = COALESCE(m.deleted_at, now())
        FROM map WHERE m.session_id = map.session_id AND m.sender_email = $1
        """,
        user_email,
        *_columns(replacements),
    )
    return _count(status)


async def erase_changes(conn: Conn, user_email: str, replacements: list[Replacement]) -> int:
    """Erase the text and envelope of the user's edits and deletes (their seqs kept); how
    many."""
    status = await conn.execute(
        _MAP
        + """
        UPDATE chat_message_changes c
        SET sender_email = map.email, content = NULL, encrypted = NULL
        FROM map WHERE c.session_id = map.session_id AND c.sender_email = $1
        """,
        user_email,
        *_columns(replacements),
    )
    return _count(status)


# The peer's envelopes name the user among their recipients: that entry keeps its place (and
# its sealed key, useless without the erased device's private key) under the placeholder. The
# envelope is stored as the client sent it, so the email is matched as message-svc checked it
# (trimmed, any case).
_SCRUB = """
    , target AS (
        SELECT t.session_id, t.{key}, map.email,
               convert_from(t.encrypted, 'UTF8')::jsonb AS e
        FROM {table} t JOIN map ON map.session_id = t.session_id
        WHERE t.encrypted IS NOT NULL
          AND strpos(lower(convert_from(t.encrypted, 'UTF8')), $1) > 0
    ), scrubbed AS (
        SELECT target.session_id, target.{key}, jsonb_set(target.e, '{{recipients}}', (
            SELECT jsonb_agg(CASE WHEN lower(btrim(r->>'email')) = $1
                                  THEN jsonb_set(r, '{{email}}', to_jsonb(target.email))
                                  ELSE r END ORDER BY n)
            FROM jsonb_array_elements(target.e->'recipients') WITH ORDINALITY AS x(r, n)
        )) AS e
        FROM target
    )
    UPDATE {table} t SET encrypted = convert_to(scrubbed.e::text, 'UTF8')
    FROM scrubbed WHERE t.session_id = scrubbed.session_id AND t.{key} = scrubbed.{key}
"""


async def scrub_envelopes(conn: Conn, user_email: str, replacements: list[Replacement]) -> int:
    """Replace the user's email in the recipients of the other participants' envelopes
    (messages and edits); how many rows."""
    total = 0
    for table, key in (("chat_messages", "id"), ("chat_message_changes", "seq")):
        status = await conn.execute(
            _MAP + _SCRUB.format(table=table, key=key), user_email, *_columns(replacements)
        )
        total += _count(status)
    return total


async def remove_keys(conn: Conn, user_email: str) -> int:
    status = await conn.execute("DELETE FROM chat_user_keys WHERE user_email = $1", user_email)
    return _count(status)


async def purge_outbox(
    conn: Conn, user_email: str, user_key: str, sessions: list[uuid.UUID]
) -> int:
    """Remove the unpublished and dead outbox rows of the user's sessions, and any other that
    names the user (in its payload, or its headers: the email or the user's routing key)."""
    total = 0
    for table in ("chat_message_outbox", "chat_message_outbox_dead"):
        status = await conn.execute(
            f"""
            DELETE FROM {table}
            WHERE session_id = ANY($3::uuid[])
               OR position(convert_to($1, 'UTF8') in payload) > 0
               OR strpos(headers::text, $1) > 0 OR strpos(headers::text, $2) > 0
            """,
            user_email,
            user_key,
            sessions,
        )
        total += _count(status)
    return total
