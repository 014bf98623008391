"""SQL of messages, marks and outbox rows. The caller owns the connection and transaction."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from chat_common import outbox, routing
from chat_common.db import Conn
from chat_common.outbox import OutboxEntry as OutboxEntry
from chat_common.outbox import add_outbox as add_outbox
from chat_common.outbox import notify as notify

OUTBOX_CHANNEL = outbox.CHANNEL


@dataclass(frozen=True, slots=True)
class Member:
    session_id: uuid.UUID
    intent: str
    profile_id: uuid.UUID
    user_email: str
    display_name: str
    read_seq: int
    delivered_seq: int
    blocked_at: dt.datetime | None = None
    """When this participant blocked the session (None: they do not block it)."""
    closed_reason: str | None = None
    """Why the session closed for good (``PARTICIPANT_DELETED``); None while it is open."""


async def members(conn: Conn, session_id: uuid.UUID) -> list[Member]:
    """Both participants of a session (empty when the session does not exist)."""
    rows = await conn.fetch(
        """
        SELECT p.session_id, s.intent, p.profile_id, p.user_email, p.display_name,
               p.read_seq, p.delivered_seq, p.blocked_at, s.closed_reason
        FROM chat_participants p JOIN chat_sessions s ON s.id = p.session_id
        WHERE p.session_id = $1
        """,
        session_id,
    )
    return [_member(r) for r in rows]


_MEMBER_FIELDS = tuple(Member.__dataclass_fields__)


def _member(row: asyncpg.Record) -> Member:
    return Member(**{name: row[name] for name in _MEMBER_FIELDS})


_MESSAGE_COLUMNS = """
    m.id, m.session_id, m.seq, m.sender_profile_id, m.sender_display_name, m.sender_email,
    m.content, m.client_msg_id, m.sent_at, m.edited_at, m.deleted_at, m.encrypted
"""


async def find_by_client_id(
    conn: Conn, sender_email: str, client_msg_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_MESSAGE_COLUMNS} FROM chat_messages m"
        " WHERE m.sender_email = $1 AND m.client_msg_id = $2",
        sender_email,
        client_msg_id,
    )


class ClientIdTaken(Exception):
    """The sender already used this client message id (a concurrent send won the race)."""


@dataclass(frozen=True, slots=True)
class Draft:
    """A message to store: everything but its seq, which the batch statement allocates."""

    message_id: uuid.UUID
    session_id: uuid.UUID
    sender: Member
    content: str | None  # None: an encrypted message
    client_msg_id: uuid.UUID
    sent_at: dt.datetime
    event: SeqTemplate
    encrypted: bytes | None = None  # the envelope as stored, opaque


_BATCH = f"""
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                         $7::uuid[], $8::timestamptz[], $9::text[], $10::text[], $11::text[],
                         $12::bytea[], $13::bytea[], $14::bytea[])
        WITH ORDINALITY AS i(id, session_id, sender_profile_id, sender_email,
                             sender_display_name, content, client_msg_id, sent_at, routing_key,
                             event_type, headers, before_seq, after_seq, encrypted, ord)
), prior AS (
    SELECT i.ord, {_MESSAGE_COLUMNS} FROM input i
    JOIN chat_messages m ON m.sender_email = i.sender_email AND m.client_msg_id = i.client_msg_id
), fresh AS (
    SELECT i.* FROM input i WHERE NOT EXISTS (SELECT 1 FROM prior p WHERE p.ord = i.ord)
), counts AS (
    SELECT session_id, count(*) AS n FROM fresh GROUP BY session_id
), locked AS (
    -- the sessions' rows locked in id order, so concurrent batches never deadlock
    -- (a session closed meanwhile, by an erasure that held the lock, stores nothing more)
    SELECT c.id FROM chat_sessions c WHERE c.id IN (SELECT session_id FROM counts)
      AND c.closed_at IS NULL
    ORDER BY c.id FOR UPDATE
), seqs AS (
    UPDATE chat_sessions c SET last_seq = c.last_seq + counts.n
    FROM counts WHERE c.id = counts.session_id AND c.id IN (SELECT id FROM locked)
    RETURNING c.id, c.last_seq - counts.n AS base
), numbered AS (
    SELECT f.*, s.base + row_number() OVER (PARTITION BY f.session_id ORDER BY f.ord) AS seq
    FROM fresh f JOIN seqs s ON s.id = f.session_id
), stored AS (
    INSERT INTO chat_messages (id, session_id, seq, sender_profile_id, sender_email,
                               sender_display_name, content, client_msg_id, sent_at, encrypted)
    SELECT id, session_id, seq, sender_profile_id, sender_email, sender_display_name, content,
           client_msg_id, sent_at, encrypted
    FROM numbered
    RETURNING id
), queued AS (
    INSERT INTO chat_message_outbox (session_id, routing_key, event_type, headers, payload)
    SELECT n.session_id, n.routing_key, n.event_type,
           jsonb_set(n.headers::jsonb, ARRAY[$15::text], to_jsonb(n.seq)),
           n.before_seq || convert_to(n.seq::text, 'UTF8') || n.after_seq
    FROM numbered n ORDER BY n.ord
    RETURNING 1
), wake AS (
    SELECT pg_notify('{OUTBOX_CHANNEL}', '') FROM (SELECT 1 FROM queued LIMIT 1) x
)
SELECT true AS new, n.ord, n.id, n.session_id, n.seq, n.sender_profile_id,
       n.sender_display_name, n.sender_email, n.content, n.client_msg_id, n.sent_at,
       NULL::timestamptz AS edited_at, NULL::timestamptz AS deleted_at, n.encrypted
FROM numbered n
WHERE n.id IN (SELECT id FROM stored) AND (SELECT count(*) FROM wake) >= 0
UNION ALL
SELECT false, p.ord, p.id, p.session_id, p.seq, p.sender_profile_id, p.sender_display_name,
       p.sender_email, p.content, p.client_msg_id, p.sent_at, p.edited_at, p.deleted_at,
       p.encrypted
FROM prior p
"""


async def insert_batch(conn: Conn, drafts: Sequence[Draft]) -> dict[int, asyncpg.Record]:
    """Store many messages and their outbox rows in one statement (so one transaction and one
    commit), and wake the relays in it: for each draft, by its index, the stored row (``new``
    true) or the sender's earlier message with the same client id (``new`` false, nothing
    written for it). A draft of a session that no longer exists, or is closed, has no row.
    Each session's seqs follow the drafts' order; the sessions' rows are locked in id order, so
    batches running at once serialise per session and never deadlock. :class:`ClientIdTaken` when a
    concurrent transaction stored one of the client ids first (nothing of the batch is
    written; run it again and that draft comes back as the earlier message)."""
    columns: list[list[object]] = [[] for _ in range(14)]
    for d in drafts:
        values = (
            d.message_id,
            d.session_id,
            d.sender.profile_id,
            d.sender.user_email,
            d.sender.display_name,
            d.content,
            d.client_msg_id,
            d.sent_at,
            d.event.entry.routing_key,
            d.event.entry.event_type,
            json.dumps(dict(d.event.entry.headers)),
            d.event.before_seq,
            d.event.after_seq,
            d.encrypted,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    try:
        rows = await conn.fetch(_BATCH, *columns, routing.SEQ_HEADER)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "chat_messages_client_id_unique":
            raise ClientIdTaken from None
        raise
    return {int(r["ord"]) - 1: r for r in rows}


@dataclass(frozen=True, slots=True)
class SeqTemplate:
    """An outbox entry whose seq is not known yet: the payload split around where the seq's
    digits go, and the header that carries it."""

    entry: OutboxEntry
    before_seq: bytes
    after_seq: bytes
    seq_header: str


def history_statement(*, before: bool, after: bool) -> str:
    """The page query for one combination of cursors. Each combination is its own statement,
    so every seq bound is an index condition on (session_id, seq) even under a generic plan
    (a ``$n IS NULL OR ...`` bound would become a filter over the whole session).

    Parameters: $1 the session, then ``after``, then ``before`` (those given), then the limit.
    With ``after`` the page is the oldest rows above it; otherwise the newest below ``before``."""
    bounds = ["m.session_id = $1"]
    if after:
        bounds.append(f"m.seq > ${len(bounds) + 1}")
    if before:
        bounds.append(f"m.seq < ${len(bounds) + 1}")
    order = "ASC" if after else "DESC"
    return (
        f"SELECT {_MESSAGE_COLUMNS} FROM chat_messages m WHERE {' AND '.join(bounds)}"
        f" ORDER BY m.seq {order} LIMIT ${len(bounds) + 1}"
    )


_HISTORY = {
    (before, after): history_statement(before=before, after=after)
    for before in (False, True)
    for after in (False, True)
}


async def history(
    conn: Conn,
    session_id: uuid.UUID,
    *,
    limit: int,
    before: int | None,
    after: int | None,
) -> list[asyncpg.Record]:
    """A page of messages, newest first, read through the (session_id, seq) index.

    With ``after`` the page holds the oldest messages above it (to catch up); otherwise the
    newest below ``before`` (to scroll back)."""
    args = [session_id, *(b for b in (after, before) if b is not None), limit]
    rows = await conn.fetch(_HISTORY[(before is not None, after is not None)], *args)
    return list(reversed(rows)) if after is not None else list(rows)


async def unread(
    conn: Conn, session_id: uuid.UUID, reader: Member, limit: int
) -> tuple[int, list[asyncpg.Record]]:
    """The reader's unread messages (from the peer, above the reader's read mark, not
    deleted), oldest first, and how many there are: one statement, so the count and the page
    come from the same snapshot (a message committed in between is in both or in neither).
    Edits and deletes are not messages: they are never unread."""
    rows = await conn.fetch(
        f"""
        WITH page AS (
            SELECT {_MESSAGE_COLUMNS} FROM chat_messages m
            WHERE m.session_id = $1 AND m.seq > $2 AND m.sender_email <> $3
              AND m.deleted_at IS NULL
            ORDER BY m.seq ASC LIMIT $4
        ), total AS (
            SELECT count(*) AS unread_count FROM chat_messages u
            WHERE u.session_id = $1 AND u.seq > $2 AND u.sender_email <> $3
              AND u.deleted_at IS NULL
        )
        SELECT total.unread_count, page.* FROM total LEFT JOIN page ON true
        ORDER BY page.seq ASC
        """,
        session_id,
        reader.read_seq,
        reader.user_email,
        limit,
    )
    count = int(rows[0]["unread_count"])
    return count, [r for r in rows if r["id"] is not None]


async def sessions_of(
    conn: Conn,
    user_email: str,
    *,
    limit: int,
    before: tuple[dt.datetime, uuid.UUID] | None = None,
) -> list[asyncpg.Record]:
    """A page of a user's sessions, most recently active first (the last message's time, or
    the session's creation), with the peer, the last message and the unread count; ``before``
    is the (activity, session id) of the previous page's last session. The unread counts are
    taken for the page's sessions only."""
    return list(
        await conn.fetch(
            """
            WITH page AS (
                SELECT s.id AS session_id, s.intent, s.created_at,
                       me.profile_id AS me_profile_id, me.display_name AS me_display_name,
                       me.user_email AS me_email, me.read_seq,
                       peer.profile_id AS peer_profile_id,
                       peer.display_name AS peer_display_name, peer.user_email AS peer_email,
                       me.blocked_at AS me_blocked_at, peer.blocked_at AS peer_blocked_at,
                       s.closed_reason,
                       last.id AS last_id, last.seq AS last_seq,
                       last.sender_email AS last_sender, last.content AS last_content,
                       last.sent_at AS last_sent_at, last.edited_at AS last_edited_at,
                       last.deleted_at AS last_deleted_at, last.encrypted AS last_encrypted,
                       COALESCE(last.sent_at, s.created_at) AS activity
                FROM chat_participants me
                JOIN chat_sessions s ON s.id = me.session_id
                JOIN chat_participants peer
                  ON peer.session_id = me.session_id AND peer.profile_id <> me.profile_id
                LEFT JOIN LATERAL (
                    -- the latest message (the last seq may be an edit or a delete)
                    SELECT m.id, m.seq, m.sender_email, m.content, m.sent_at, m.edited_at,
                           m.deleted_at, m.encrypted IS NOT NULL AS encrypted
                    FROM chat_messages m
                    WHERE m.session_id = s.id
                    ORDER BY m.seq DESC LIMIT 1
                ) last ON true
                WHERE me.user_email = $1
                  AND ($3::timestamptz IS NULL
                       OR (COALESCE(last.sent_at, s.created_at), s.id) < ($3, $4::uuid))
                ORDER BY activity DESC, s.id DESC
                LIMIT $2
            )
            SELECT page.*,
                   (SELECT count(*) FROM chat_messages u
                     WHERE u.session_id = page.session_id AND u.seq > page.read_seq
                       AND u.sender_email <> page.me_email
                       AND u.deleted_at IS NULL) AS unread_count
            FROM page
            ORDER BY activity DESC, session_id DESC
            """,
            user_email,
            limit,
            before[0] if before else None,
            before[1] if before else None,
        )
    )


# -- edits and deletes -------------------------------------------------------------------

_CHANGE_COLUMNS = """
    c.kind, c.session_id, c.seq, c.message_id, m.seq AS message_seq,
    m.sender_profile_id, c.sender_email, c.content, c.client_msg_id, c.changed_at, c.encrypted
"""


class ChangeClientIdTaken(Exception):
    """A concurrent change of the same user stored this client id first."""


async def lock_session(conn: Conn, session_id: uuid.UUID) -> bool:
    """Lock the session's row until the transaction ends (what a send batch locks to allocate
    seqs, so changes and sends of a session take turns); False when there is no session."""
    found = await conn.fetchval(
        "SELECT true FROM chat_sessions WHERE id = $1 FOR UPDATE", session_id
    )
    return bool(found)


async def find_change(
    conn: Conn, sender_email: str, client_msg_id: uuid.UUID
) -> asyncpg.Record | None:
    """The user's change with this client id, with the message's seq and sender."""
    return await conn.fetchrow(
        f"SELECT {_CHANGE_COLUMNS} FROM chat_message_changes c"
        " JOIN chat_messages m ON m.id = c.message_id"
        " WHERE c.sender_email = $1 AND c.client_msg_id = $2",
        sender_email,
        client_msg_id,
    )


async def message_for_change(
    conn: Conn, session_id: uuid.UUID, message_id: uuid.UUID
) -> asyncpg.Record | None:
    """The message to change, locked until the transaction ends (None: not in the session)."""
    return await conn.fetchrow(
        f"SELECT {_MESSAGE_COLUMNS} FROM chat_messages m"
        " WHERE m.id = $1 AND m.session_id = $2 FOR UPDATE",
        message_id,
        session_id,
    )


async def apply_change(
    conn: Conn,
    *,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    kind: str,
    sender_email: str,
    client_msg_id: uuid.UUID,
    content: str | None,
    changed_at: dt.datetime,
    encrypted: bytes | None = None,
) -> int:
    """Allocate the change's seq, store the change and the message's new state in one
    statement; the change's seq. An edit has ``content`` or ``encrypted`` (an envelope). A
    delete sets the message's content and envelope to NULL and clears those of its earlier
    edits too: the text or the ciphertext is gone from the tables, not hidden. The caller
    holds the session's lock (:func:`lock_session`) and the message's
    (:func:`message_for_change`). :class:`ChangeClientIdTaken` when a concurrent change of
    this user (in another session) took the client id."""
    edit_body = (content is not None) + (encrypted is not None)
    if kind not in ("edit", "delete") or edit_body != (1 if kind == "edit" else 0):
        raise ValueError("an edit has content or an envelope, a delete neither")
    try:
        seq = await conn.fetchval(
            """
            WITH allocated AS (
                UPDATE chat_sessions SET last_seq = last_seq + 1 WHERE id = $1
                RETURNING last_seq
            ), message AS (
                UPDATE chat_messages SET
                    content = $6,
                    encrypted = $8,
                    edited_at = CASE WHEN $3 = 'edit' THEN $7 ELSE edited_at END,
                    deleted_at = CASE WHEN $3 = 'delete' THEN $7 ELSE deleted_at END
                WHERE id = $2 AND session_id = $1
                RETURNING id
            ), scrubbed AS (
                UPDATE chat_message_changes SET content = NULL, encrypted = NULL
                WHERE message_id = $2 AND $3 = 'delete'
                  AND (content IS NOT NULL OR encrypted IS NOT NULL)
                RETURNING 1
            )
            INSERT INTO chat_message_changes (session_id, seq, message_id, kind, sender_email,
                                              client_msg_id, content, changed_at, encrypted)
            SELECT $1, allocated.last_seq, $2, $3, $4, $5, $6, $7, $8
            FROM allocated
            WHERE (SELECT count(*) FROM message) = 1 AND (SELECT count(*) FROM scrubbed) >= 0
            RETURNING seq
            """,
            session_id,
            message_id,
            kind,
            sender_email,
            client_msg_id,
            content,
            changed_at,
            encrypted,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "chat_message_changes_client_id_unique":
            raise ChangeClientIdTaken from None
        raise
    if seq is None:
        raise LookupError("the session or the message went away under its lock")
    return int(seq)


def events_statement(*, before: bool) -> str:
    """A page of a session's events above ``after``: messages and changes in seq order, each
    read through its table's (session_id, seq) index. Parameters: $1 the session, $2
    ``after``, then ``before`` (when given), then the limit."""
    bound = " AND seq < $3" if before else ""
    limit = "$4" if before else "$3"
    return f"""
        WITH places AS (
            (SELECT seq, id AS message_id, false AS is_change FROM chat_messages
             WHERE session_id = $1 AND seq > $2{bound} ORDER BY seq LIMIT {limit})
            UNION ALL
            (SELECT seq, message_id, true FROM chat_message_changes
             WHERE session_id = $1 AND seq > $2{bound} ORDER BY seq LIMIT {limit})
            ORDER BY seq LIMIT {limit}
        )
        SELECT p.seq AS place, p.is_change, c.kind, c.content AS change_content,
               c.encrypted AS change_encrypted,
               c.client_msg_id AS change_client_msg_id, c.changed_at,
               {_MESSAGE_COLUMNS}
        FROM places p
        JOIN chat_messages m ON m.id = p.message_id
        LEFT JOIN chat_message_changes c ON p.is_change AND c.session_id = $1 AND c.seq = p.seq
        ORDER BY p.seq
    """


_EVENTS = {before: events_statement(before=before) for before in (False, True)}


async def events(
    conn: Conn, session_id: uuid.UUID, *, after: int, before: int | None, limit: int
) -> list[asyncpg.Record]:
    """A page of the session's events with ``after < seq`` (``< before`` when given), oldest
    first: each (``place`` its seq) a message row in its current state, or a change
    (``is_change``, its columns ``kind``, ``change_content``...) with the row of the message
    it changed."""
    args: list[object] = [session_id, after]
    if before is not None:
        args.append(before)
    args.append(limit)
    return list(await conn.fetch(_EVENTS[before is not None], *args))


async def move_mark(
    conn: Conn, session_id: uuid.UUID, profile_id: uuid.UUID, kind: str, up_to: int
) -> tuple[int, int, bool]:
    """Move a read or delivered mark forward (capped at the last seq; a read mark also moves
    the delivered mark). Returns (read_seq, delivered_seq, moved)."""
    if kind not in ("read", "delivered"):
        raise ValueError(kind)
    row = await conn.fetchrow(
        """
        WITH target AS (
            SELECT LEAST($3::bigint, s.last_seq) AS seq
            FROM chat_sessions s WHERE s.id = $1
        ), old AS (
            SELECT read_seq, delivered_seq FROM chat_participants
            WHERE session_id = $1 AND profile_id = $2
            FOR UPDATE
        )
        UPDATE chat_participants p SET
            read_seq = CASE WHEN $4 THEN GREATEST(p.read_seq, target.seq) ELSE p.read_seq END,
            delivered_seq = GREATEST(p.delivered_seq, target.seq)
        FROM target, old
        WHERE p.session_id = $1 AND p.profile_id = $2
        RETURNING p.read_seq, p.delivered_seq, old.read_seq AS old_read,
                  old.delivered_seq AS old_delivered
        """,
        session_id,
        profile_id,
        up_to,
        kind == "read",
    )
    assert row is not None
    moved = (
        row["read_seq"] != row["old_read"]
        if kind == "read"
        else row["delivered_seq"] != row["old_delivered"]
    )
    return int(row["read_seq"]), int(row["delivered_seq"]), moved
