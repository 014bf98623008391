"""SQL of the relay. Every statement is its own short transaction (autocommit unless said).

Claims are serialised across relay instances by a transaction-scoped advisory lock, so that
two relays never hold rows of one session at the same time; within a claim, ``FOR UPDATE SKIP
LOCKED`` steps over rows another transaction is updating. A row is claimable when it is due
(pending) or its claimer's lease ran out (claimed), and no earlier unpublished row of its
session is waiting (in backoff or leased): per-session order. Dead rows block nothing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from chat_common.db import Conn

CHANNEL = "chat_outbox"
CLAIM_LOCK = 0x6F7574626F78  # "outbox"


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    session_id: uuid.UUID | None
    exchange: str
    routing_key: str
    headers: dict[str, Any]
    payload: bytes
    retry_count: int
    age_seconds: float  # created_at -> the claim


async def claim(conn: Conn, token: uuid.UUID, limit: int, lease_seconds: float) -> list[Claimed]:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
        rows = await conn.fetch(
            """
            WITH candidates AS (
                SELECT o.id FROM chat_message_outbox o
                WHERE o.status IN ('pending', 'claimed')
                  AND ((o.status = 'pending' AND o.next_retry_at <= now())
                    OR (o.status = 'claimed' AND o.lease_until <= now()))
                  AND NOT EXISTS (
                      SELECT 1 FROM chat_message_outbox e
                      WHERE e.session_id = o.session_id AND e.id < o.id
                        AND e.status IN ('pending', 'claimed')
                        AND ((e.status = 'pending' AND e.next_retry_at > now())
                          OR (e.status = 'claimed' AND e.lease_until > now())))
                ORDER BY o.id
                LIMIT $1
                FOR UPDATE SKIP LOCKED
            )
            UPDATE chat_message_outbox o
            SET status = 'claimed', claim_token = $2,
                lease_until = now() + make_interval(secs => $3)
            FROM candidates c
            WHERE o.id = c.id
            RETURNING o.id, o.session_id, o.exchange, o.routing_key, o.headers, o.payload,
                      o.retry_count, extract(epoch FROM now() - o.created_at) AS age
            """,
            limit,
            token,
            lease_seconds,
        )
    return sorted(
        (
            Claimed(
                id=r["id"],
                session_id=r["session_id"],
                exchange=r["exchange"],
                routing_key=r["routing_key"],
                headers=json.loads(r["headers"]),
                payload=bytes(r["payload"]),
                retry_count=r["retry_count"],
                age_seconds=float(r["age"]),
            )
            for r in rows
        ),
        key=lambda c: c.id,
    )


async def mark_published(conn: Conn, token: uuid.UUID, ids: list[int]) -> int:
    """Fenced: only rows still claimed under ``token`` move (a stale claimer changes nothing)."""
    status = await conn.execute(
        """
        UPDATE chat_message_outbox
        SET status = 'published', sent_at = now(), claim_token = NULL, lease_until = NULL
        WHERE id = ANY($1::bigint[]) AND status = 'claimed' AND claim_token = $2
        """,
        ids,
        token,
    )
    return int(status.rsplit(" ", 1)[1])


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
    return status.endswith(" 1")


async def release(conn: Conn, token: uuid.UUID, ids: list[int]) -> None:
    """Give rows back unpublished, without counting an attempt."""
    if ids:
        await conn.execute(
            """
            UPDATE chat_message_outbox
            SET status = 'pending', claim_token = NULL, lease_until = NULL
            WHERE id = ANY($1::bigint[]) AND status = 'claimed' AND claim_token = $2
            """,
            ids,
            token,
        )


async def purge(conn: Conn, older_than_seconds: float, limit: int = 5000) -> int:
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
    return int(status.rsplit(" ", 1)[1])


async def backlog(conn: Conn) -> tuple[int, float]:
    """Unpublished rows and the age of the oldest one, in seconds."""
    row = await conn.fetchrow(
        """
        SELECT count(*) AS n, COALESCE(extract(epoch FROM now() - min(created_at)), 0) AS age
        FROM chat_message_outbox WHERE status IN ('pending', 'claimed')
        """
    )
    assert row is not None
    return int(row["n"]), float(row["age"])


async def dead_rows(conn: Conn, limit: int = 200) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """
            SELECT id, session_id, routing_key, event_type, retry_count, last_error, created_at
            FROM chat_message_outbox WHERE status = 'dead' ORDER BY id LIMIT $1
            """,
            limit,
        )
    )


async def requeue(conn: Conn, ids: list[int] | None) -> int:
    """Send dead rows round again (all of them when ``ids`` is None), then wake the relays."""
    async with conn.transaction():
        status = await conn.execute(
            """
            UPDATE chat_message_outbox
            SET status = 'pending', retry_count = 0, next_retry_at = now()
            WHERE status = 'dead' AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
            """,
            ids,
        )
        await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return int(status.rsplit(" ", 1)[1])
