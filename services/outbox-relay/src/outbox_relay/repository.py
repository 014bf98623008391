"""SQL of the relay. The caller owns the transaction; each function is short.

Claiming (:func:`claim`) is one statement. A row is claimable when it is due (``pending`` and
``next_retry_at <= now()``) or its claimer's lease ran out (``claimed`` and ``lease_until <=
now()``). Per-session order is kept by two rules, both in SQL:

1. ``blockers``: a row behind an earlier unpublished row of its session that is not claimable
   now (in backoff, or under a live lease) is not even a candidate, so a stalled session does
   not fill the batch with rows that cannot go;
2. ``heads``: of the candidates locked with ``FOR UPDATE SKIP LOCKED`` (in id order, up to the
   batch size), a row is taken only if every earlier unpublished row of its session is among
   them. A row that another relay holds locked, or that fell beyond the limit, therefore holds
   back the later rows of its session: two relays never hold rows of one session at once, with
   no global lock.

Alone (no other transaction holding rows locked), a claim takes exactly the first ``limit``
rows, in id order, of what :func:`outbox_relay.domain.publishable_in_order` allows at that
moment; rule 2 covers the rows other claims hold, and rule 1 keeps the batch full.

Dead rows block nothing (:data:`outbox_relay.domain.DEAD_BLOCKS_SESSION`). The claim token is
the fencing token: every later write checks it, so a relay that lost its lease (paused, cut
off) changes nothing.

Cost: the statement is set-based (the CTEs are materialised once, no per-row subquery over the
backlog), so a plan chosen on stale statistics stays linear; ``blockers`` reads every
unpublished row, a few milliseconds per 10,000 of backlog.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from chat_common.db import Conn

from .domain import DEAD_BLOCKS_SESSION

CHANNEL = "chat_outbox"

# The statements below only count 'pending' and 'claimed' rows as blocking.
assert DEAD_BLOCKS_SESSION is False


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    session_id: uuid.UUID | None
    exchange: str
    routing_key: str
    event_type: str
    headers: dict[str, Any]
    payload: bytes
    retry_count: int
    age_seconds: float  # from created_at to the claim, by the database's clock


_CLAIM = """
WITH blockers AS MATERIALIZED (
    SELECT session_id, min(id) AS first_id FROM chat_message_outbox
    WHERE status IN ('pending', 'claimed') AND session_id IS NOT NULL
      AND ((status = 'pending' AND next_retry_at > now())
        OR (status = 'claimed' AND lease_until > now()))
    GROUP BY session_id
), locked AS MATERIALIZED (
    SELECT o.id, o.session_id FROM chat_message_outbox o
    LEFT JOIN blockers b ON b.session_id = o.session_id
    WHERE o.status IN ('pending', 'claimed')
      AND ((o.status = 'pending' AND o.next_retry_at <= now())
        OR (o.status = 'claimed' AND o.lease_until <= now()))
      AND (b.first_id IS NULL OR o.id < b.first_id)
    ORDER BY o.id
    LIMIT $1
    FOR UPDATE OF o SKIP LOCKED
), heads AS MATERIALIZED (
    SELECT s.session_id, (
        SELECT e.id FROM chat_message_outbox e
        WHERE e.session_id = s.session_id AND e.status IN ('pending', 'claimed')
          AND e.id NOT IN (SELECT id FROM locked)
        ORDER BY e.session_id, e.id LIMIT 1) AS first_outside
    FROM (SELECT DISTINCT session_id FROM locked WHERE session_id IS NOT NULL) s
)
UPDATE chat_message_outbox o
SET status = 'claimed', claim_token = $2, lease_until = now() + make_interval(secs => $3)
FROM locked l LEFT JOIN heads h ON h.session_id = l.session_id
WHERE o.id = l.id AND (h.first_outside IS NULL OR l.id < h.first_outside)
RETURNING o.id, o.session_id, o.exchange, o.routing_key, o.event_type, o.headers, o.payload,
          o.retry_count, extract(epoch FROM now() - o.created_at) AS age
"""


async def claim(conn: Conn, token: uuid.UUID, limit: int, lease_seconds: float) -> list[Claimed]:
    """Claim up to ``limit`` rows under ``token`` for ``lease_seconds``; sorted by id."""
    rows = await conn.fetch(_CLAIM, limit, token, lease_seconds)
    claimed = [
        Claimed(
            id=r["id"],
            session_id=r["session_id"],
            exchange=r["exchange"],
            routing_key=r["routing_key"],
            event_type=r["event_type"],
            headers=json.loads(r["headers"]),
            payload=bytes(r["payload"]),
            retry_count=r["retry_count"],
            age_seconds=float(r["age"]),
        )
        for r in rows
    ]
    claimed.sort(key=lambda c: c.id)
    return claimed


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[1])


async def mark_published(conn: Conn, token: uuid.UUID, ids: list[int]) -> int:
    """Fenced: only rows still claimed under ``token`` move. Returns how many did."""
    if not ids:
        return 0
    status = await conn.execute(
        """
        UPDATE chat_message_outbox
        SET status = 'published', sent_at = now(), claim_token = NULL, lease_until = NULL
        WHERE id = ANY($1::bigint[]) AND status = 'claimed' AND claim_token = $2
        """,
        ids,
        token,
    )
    return _count(status)


async def mark_failed(
    conn: Conn,
    token: uuid.UUID,
    row_id: int,
    *,
    dead: bool,
    retry_count: int,
    delay_seconds: float,
    error: str,
) -> bool:
    """Fenced: back to pending after ``delay_seconds``, or dead; False if the claim was lost."""
    status = await conn.execute(
        """
        UPDATE chat_message_outbox
        SET status = CASE WHEN $3 THEN 'dead' ELSE 'pending' END,
            retry_count = $4,
            next_retry_at = CASE WHEN $3 THEN next_retry_at
                                 ELSE now() + make_interval(secs => $5) END,
            last_error = $6, claim_token = NULL, lease_until = NULL
        WHERE id = $1 AND status = 'claimed' AND claim_token = $2
        """,
        row_id,
        token,
        dead,
        retry_count,
        delay_seconds,
        error,
    )
    return _count(status) == 1


async def release(conn: Conn, token: uuid.UUID, ids: list[int]) -> int:
    """Fenced: give rows back unpublished, due at once, without counting an attempt."""
    if not ids:
        return 0
    status = await conn.execute(
        """
        UPDATE chat_message_outbox
        SET status = 'pending', claim_token = NULL, lease_until = NULL
        WHERE id = ANY($1::bigint[]) AND status = 'claimed' AND claim_token = $2
        """,
        ids,
        token,
    )
    return _count(status)


async def release_claims(conn: Conn, tokens: list[uuid.UUID]) -> int:
    """Fenced: give back every row still claimed under one of ``tokens``, whichever rows they
    are (a claim whose answer never arrived included). Returns how many moved."""
    if not tokens:
        return 0
    status = await conn.execute(
        """
        UPDATE chat_message_outbox
        SET status = 'pending', claim_token = NULL, lease_until = NULL
        WHERE status = 'claimed' AND claim_token = ANY($1::uuid[])
        """,
        tokens,
    )
    return _count(status)


async def purge(conn: Conn, older_than_seconds: float, limit: int = 5000) -> int:
    """Delete at most ``limit`` rows published more than ``older_than_seconds`` ago."""
    status = await conn.execute(
        """
        DELETE FROM chat_message_outbox WHERE id IN (
            SELECT id FROM chat_message_outbox
            WHERE status = 'published' AND sent_at < now() - make_interval(secs => $1)
            LIMIT $2)
        """,
        older_than_seconds,
        limit,
    )
    return _count(status)


async def backlog(conn: Conn) -> tuple[int, float]:
    """Unpublished rows (pending or claimed) and the age of the oldest one, in seconds."""
    row = await conn.fetchrow(
        """
        SELECT count(*) AS n, COALESCE(extract(epoch FROM now() - min(created_at)), 0) AS age
        FROM chat_message_outbox WHERE status IN ('pending', 'claimed')
        """
    )
    assert row is not None
    return int(row["n"]), float(row["age"])


async def dead_rows(conn: Conn, limit: int = 100) -> list[asyncpg.Record]:
    """The first ``limit`` dead rows, in id order."""
    return list(
        await conn.fetch(
            """
            SELECT id, session_id, routing_key, event_type, retry_count, last_error, created_at
            FROM chat_message_outbox WHERE status = 'dead' ORDER BY id LIMIT $1
            """,
            limit,
        )
    )


async def count_dead(conn: Conn) -> int:
    count = await conn.fetchval("SELECT count(*) FROM chat_message_outbox WHERE status = 'dead'")
    return int(count)


async def requeue(conn: Conn, ids: list[int] | None) -> list[int]:
    """Dead rows back to pending, attempts reset, due now (all of them when ``ids`` is None);
    then wake the relays. Returns the ids moved. Runs its own transaction."""
    async with conn.transaction():
        rows = await conn.fetch(
            """
            UPDATE chat_message_outbox
            SET status = 'pending', retry_count = 0, next_retry_at = now()
            WHERE status = 'dead' AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
            RETURNING id
            """,
            ids,
        )
        if rows:
            await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return sorted(r["id"] for r in rows)
