"""SQL of messages, marks and outbox rows. The caller owns the connection and transaction."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from chat_common import routing
from chat_common.db import Conn

OUTBOX_CHANNEL = "chat_outbox"


@dataclass(frozen=True, slots=True)
class Member:
    session_id: uuid.UUID
    intent: str
    profile_id: uuid.UUID
    user_email: str
    display_name: str
    read_seq: int
    delivered_seq: int


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    session_id: uuid.UUID | None
    routing_key: str
    event_type: str
    headers: Mapping[str, object]
    payload: bytes


async def members(conn: Conn, session_id: uuid.UUID) -> list[Member]:
    """Both participants of a session (empty when the session does not exist)."""
    rows = await conn.fetch(
        """
        SELECT p.session_id, s.intent, p.profile_id, p.user_email, p.display_name,
               p.read_seq, p.delivered_seq
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
    m.content, m.client_msg_id, m.sent_at
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
    content: str
    client_msg_id: uuid.UUID
    sent_at: dt.datetime
    event: SeqTemplate


_BATCH = f"""
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                         $7::uuid[], $8::timestamptz[], $9::text[], $10::text[], $11::text[],
                         $12::bytea[], $13::bytea[])
        WITH ORDINALITY AS i(id, session_id, sender_profile_id, sender_email,
                             sender_display_name, content, client_msg_id, sent_at, routing_key,
                             event_type, headers, before_seq, after_seq, ord)
), prior AS (
    SELECT i.ord, {_MESSAGE_COLUMNS} FROM input i
    JOIN chat_messages m ON m.sender_email = i.sender_email AND m.client_msg_id = i.client_msg_id
), fresh AS (
    SELECT i.* FROM input i WHERE NOT EXISTS (SELECT 1 FROM prior p WHERE p.ord = i.ord)
), counts AS (
    SELECT session_id, count(*) AS n FROM fresh GROUP BY session_id
), locked AS (
    -- the sessions' rows locked in id order, so concurrent batches never deadlock
    SELECT c.id FROM chat_sessions c WHERE c.id IN (SELECT session_id FROM counts)
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
                               sender_display_name, content, client_msg_id, sent_at)
    SELECT id, session_id, seq, sender_profile_id, sender_email, sender_display_name, content,
           client_msg_id, sent_at
    FROM numbered
    RETURNING id
), queued AS (
    INSERT INTO chat_message_outbox (session_id, routing_key, event_type, headers, payload)
    SELECT n.session_id, n.routing_key, n.event_type,
           jsonb_set(n.headers::jsonb, ARRAY[$14::text], to_jsonb(n.seq)),
           n.before_seq || convert_to(n.seq::text, 'UTF8') || n.after_seq
    FROM numbered n ORDER BY n.ord
    RETURNING 1
), wake AS (
    SELECT pg_notify('{OUTBOX_CHANNEL}', '') FROM (SELECT 1 FROM queued LIMIT 1) x
)
SELECT true AS new, n.ord, n.id, n.session_id, n.seq, n.sender_profile_id,
       n.sender_display_name, n.sender_email, n.content, n.client_msg_id, n.sent_at
FROM numbered n
WHERE n.id IN (SELECT id FROM stored) AND (SELECT count(*) FROM wake) >= 0
UNION ALL
SELECT false, p.ord, p.id, p.session_id, p.seq, p.sender_profile_id, p.sender_display_name,
       p.sender_email, p.content, p.client_msg_id, p.sent_at
FROM prior p
"""


async def insert_batch(conn: Conn, drafts: Sequence[Draft]) -> dict[int, asyncpg.Record]:
    """Store many messages and their outbox rows in one statement (so one transaction and one
    commit), and wake the relays in it: for each draft, by its index, the stored row (``new``
    true) or the sender's earlier message with the same client id (``new`` false, nothing
    written for it). A draft of a session that no longer exists has no row. Each session's
    seqs follow the drafts' order; the sessions' rows are locked in id order, so batches
    running at once serialise per session and never deadlock. :class:`ClientIdTaken` when a
    concurrent transaction stored one of the client ids first (nothing of the batch is
    written; run it again and that draft comes back as the earlier message)."""
    columns: list[list[object]] = [[] for _ in range(13)]
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


async def add_outbox(conn: Conn, entries: Sequence[OutboxEntry]) -> None:
    """Queue events for the relay (wake it after the commit with :func:`notify`)."""
    await conn.executemany(
        """
        INSERT INTO chat_message_outbox (session_id, routing_key, event_type, headers, payload)
        VALUES ($1, $2, $3, $4::jsonb, $5)
        """,
        [
            (e.session_id, e.routing_key, e.event_type, json.dumps(dict(e.headers)), e.payload)
            for e in entries
        ],
    )


async def notify(conn: Conn) -> None:
    """Wake the relays after a mark's commit, on its own transaction (a send batch notifies
    inside its statement instead: see :func:`insert_batch`)."""
    await conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)


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
    """The reader's unread messages (from the peer, above the reader's read mark), oldest
    first, and how many there are: one statement, so the count and the page come from the
    same snapshot (a message committed in between is in both or in neither)."""
    rows = await conn.fetch(
        f"""
        WITH page AS (
            SELECT {_MESSAGE_COLUMNS} FROM chat_messages m
            WHERE m.session_id = $1 AND m.seq > $2 AND m.sender_email <> $3
            ORDER BY m.seq ASC LIMIT $4
        ), total AS (
            SELECT count(*) AS unread_count FROM chat_messages u
            WHERE u.session_id = $1 AND u.seq > $2 AND u.sender_email <> $3
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
                       last.id AS last_id, last.seq AS last_seq,
                       last.sender_email AS last_sender, last.content AS last_content,
                       last.sent_at AS last_sent_at,
                       COALESCE(last.sent_at, s.created_at) AS activity
                FROM chat_participants me
                JOIN chat_sessions s ON s.id = me.session_id
                JOIN chat_participants peer
                  ON peer.session_id = me.session_id AND peer.profile_id <> me.profile_id
                LEFT JOIN LATERAL (
                    SELECT m.id, m.seq, m.sender_email, m.content, m.sent_at
                    FROM chat_messages m
                    WHERE m.session_id = s.id AND m.seq = s.last_seq
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
                       AND u.sender_email <> page.me_email) AS unread_count
            FROM page
            ORDER BY activity DESC, session_id DESC
            """,
            user_email,
            limit,
            before[0] if before else None,
            before[1] if before else None,
        )
    )


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
