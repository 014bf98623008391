"""SQL of the relay. The caller owns the transaction; each function is short.

Every row of ``chat_message_outbox`` waits to be published (migration 0003): a relay claims
rows by locking them (:func:`claim`, ``FOR UPDATE SKIP LOCKED``) inside a transaction that
stays open while it publishes them, then, in the same transaction, deletes what the broker
confirmed (:func:`delete_published`), pushes a failed row back with its backoff
(:func:`retry_later`) or moves it to ``chat_message_outbox_dead`` (:func:`bury`), and commits:
one commit per round, each row written once (its delete). Rows it could not publish need no
write: the locks go with the transaction. The transaction is the lease and the fence: a relay
paused past the lease has its session ended by the server
(``idle_in_transaction_session_timeout``), its locks go, another relay takes the rows, and the
paused relay's late commit fails without changing anything; a round still open past the lease
in a state that timeout does not cover is ended by the other relays (:func:`end_stale_rounds`).

Per-session order is kept by two rules, both in SQL:

1. ``blockers``: a row behind an earlier row of its session that is in backoff is not even a
   candidate, so a stalled session does not fill the batch with rows that cannot go;
2. ``heads``: of the candidates locked (in id order, up to the batch size), a row is taken only
   if every earlier row of its session is among them. A row that another relay holds locked,
   or that fell beyond the limit, therefore holds back the later rows of its session: two
   relays never publish rows of one session at once, with no global lock.

Alone (no other transaction holding rows locked), a claim takes exactly the first ``limit``
rows, in id order, of what the reference model's ``publishable_in_order`` allows at that moment
(the tests' oracle, ``services/outbox-relay/tests/oracle.py``, checked against this SQL). Dead
rows have left the table and block nothing (:data:`outbox_relay.retry.DEAD_BLOCKS_SESSION`:
the test of the claim fails if it is changed without the SQL).

Rotation (:func:`rotate`): new rows go to the partition of the current slot; every
``interval`` the current slot moves on to the next partition (truncated first), and any other
partition that holds no row any more is emptied with TRUNCATE, which gives back its dead rows
and index entries at once, whatever autovacuum does and however old a snapshot elsewhere is. A
partition that still holds a row (a relay or the broker down for a while) is left until it
is drained: nothing is ever truncated away unpublished, since the emptiness check runs under
the partition's exclusive lock, which waits for every transaction that inserted into it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from chat_common import outbox
from chat_common.db import Conn

CHANNEL = outbox.CHANNEL  # what the writers notify (chat_common.outbox)
SLOTS = 3
PARTITION = "chat_message_outbox_{slot}"


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
    WHERE retry_count > 0 AND next_retry_at > now() AND session_id IS NOT NULL
    GROUP BY session_id
), locked AS MATERIALIZED (
    SELECT o.slot, o.id, o.session_id FROM chat_message_outbox o
    LEFT JOIN blockers b ON b.session_id = o.session_id
    WHERE o.next_retry_at <= now() AND (b.first_id IS NULL OR o.id < b.first_id)
    ORDER BY o.id
    LIMIT $1
    FOR UPDATE OF o SKIP LOCKED
), heads AS MATERIALIZED (
    SELECT s.session_id, (
        SELECT e.id FROM chat_message_outbox e
        WHERE e.session_id = s.session_id AND e.id NOT IN (SELECT id FROM locked)
        ORDER BY e.session_id, e.id LIMIT 1) AS first_outside
    FROM (SELECT DISTINCT session_id FROM locked WHERE session_id IS NOT NULL) s
)
SELECT o.id, o.session_id, o.exchange, o.routing_key, o.event_type, o.headers, o.payload,
       o.retry_count, extract(epoch FROM now() - o.created_at) AS age
FROM locked l
JOIN chat_message_outbox o ON o.slot = l.slot AND o.id = l.id
LEFT JOIN heads h ON h.session_id = l.session_id
WHERE h.first_outside IS NULL OR l.id < h.first_outside
ORDER BY o.id
"""


async def claim(conn: Conn, limit: int) -> list[Claimed]:
    """Lock up to ``limit`` publishable rows for the caller's transaction; sorted by id."""
    rows = await conn.fetch(_CLAIM, limit)
    return [
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


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[1])


async def delete_published(conn: Conn, ids: list[int]) -> int:
    """The rows the broker confirmed leave the outbox. Returns how many did."""
    if not ids:
        return 0
    return _count(await conn.execute("DELETE FROM chat_message_outbox WHERE id = ANY($1)", ids))


_RETRY = """
WITH moved AS (
    DELETE FROM chat_message_outbox WHERE id = $1
    RETURNING id, session_id, exchange, routing_key, event_type, headers, payload, created_at
)
INSERT INTO chat_message_outbox (id, session_id, exchange, routing_key, event_type, headers,
                                 payload, created_at, retry_count, next_retry_at, last_error)
SELECT id, session_id, exchange, routing_key, event_type, headers, payload, created_at,
       $2, now() + make_interval(secs => $3), $4
FROM moved
"""


async def retry_later(
    conn: Conn, row_id: int, *, retry_count: int, delay_seconds: float, error: str
) -> bool:
    """Count an attempt and make the row due again after ``delay_seconds`` (it moves to the
    current slot, keeping its id, so an old partition does not wait for its backoff)."""
    status = await conn.execute(_RETRY, row_id, retry_count, delay_seconds, error)
    return _count(status) == 1


_BURY = """
WITH moved AS (
    DELETE FROM chat_message_outbox WHERE id = $1
    RETURNING id, session_id, exchange, routing_key, event_type, headers, payload, created_at
)
INSERT INTO chat_message_outbox_dead (id, session_id, exchange, routing_key, event_type,
                                      headers, payload, created_at, retry_count, last_error)
SELECT id, session_id, exchange, routing_key, event_type, headers, payload, created_at, $2, $3
FROM moved
"""


async def bury(conn: Conn, row_id: int, *, retry_count: int, error: str) -> bool:
    """Move a row whose attempts are used up to ``chat_message_outbox_dead``."""
    return _count(await conn.execute(_BURY, row_id, retry_count, error)) == 1


async def backlog(conn: Conn) -> tuple[int, float]:
    """Rows waiting (due or in backoff) and the age of the oldest one, in seconds."""
    row = await conn.fetchrow(
        """
        SELECT count(*) AS n, COALESCE(extract(epoch FROM now() - min(created_at)), 0) AS age
        FROM chat_message_outbox
        """
    )
    assert row is not None
    return int(row["n"]), float(row["age"])


async def end_stale_rounds(conn: Conn, lease_seconds: float) -> int:
    """End every relay round (a transaction of an ``outbox-relay`` connection) older than the
    lease, whatever state its connection is in; how many were ended. A round never outlives
    ``PUBLISH_TIMEOUT_SECONDS`` (shorter than the lease) while its relay runs, so an older one
    belongs to a relay that is paused or cut off. ``idle_in_transaction_session_timeout`` ends
    most of those, but not one paused in the middle of a statement's messages (its server
    process waits for the rest, as "active", with no timeout): without this, its row locks
    would hold its sessions back from every other relay for as long as it stays paused."""
    ended = await conn.fetchval(
        """
        SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND application_name LIKE 'outbox-relay %'
          AND xact_start < now() - make_interval(secs => $1)
        """,
        lease_seconds,
    )
    return int(ended or 0)


@dataclass(frozen=True, slots=True)
class Rotation:
    rotated: bool  # the current slot moved on
    truncated: list[int]  # partitions emptied with TRUNCATE
    waiting: list[int]  # partitions that still hold rows (drained later)


async def rotate(conn: Conn, interval_seconds: float, lock_timeout_ms: int = 200) -> Rotation:
    """Empty the partitions that are not current and hold no row, and move the current slot on
    once it has been current for ``interval_seconds``. One short transaction per partition;
    a lock that is not granted within ``lock_timeout_ms`` (a long transaction on it) leaves it
    for the next call. Safe from any number of relays at once."""
    truncated: list[int] = []
    waiting: list[int] = []
    current = int(await conn.fetchval("SELECT slot FROM chat_outbox_state"))
    sizes = await conn.fetch(
        "SELECT s AS slot, pg_relation_size(format('chat_message_outbox_%s', s)) AS bytes"
        " FROM generate_series(0, $1 - 1) s",
        SLOTS,
    )
    for row in sizes:
        slot = int(row["slot"])
        if slot == current or row["bytes"] == 0:
            continue
        emptied = await _truncate_if_empty(conn, slot, lock_timeout_ms)
        if emptied is None:
            continue
        (truncated if emptied else waiting).append(slot)
    rotated = False
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        state = await conn.fetchrow(
            "SELECT slot, rotated_at <= now() - make_interval(secs => $1) AS due"
            " FROM chat_outbox_state FOR UPDATE",
            interval_seconds,
        )
        assert state is not None
        following = (int(state["slot"]) + 1) % SLOTS
        if state["due"] and following not in waiting:
            try:
                await _lock(conn, following)
            except asyncpg.LockNotAvailableError:
                return Rotation(False, truncated, waiting)
            if await _holds_rows(conn, following):
                waiting.append(following)
            else:
                await conn.execute(f"TRUNCATE {PARTITION.format(slot=following)}")
                await conn.execute(
                    "UPDATE chat_outbox_state SET slot = $1, rotated_at = now()", following
                )
                rotated = True
    return Rotation(rotated, truncated, waiting)


async def _lock(conn: Conn, slot: int) -> None:
    await conn.execute(f"LOCK TABLE {PARTITION.format(slot=slot)} IN ACCESS EXCLUSIVE MODE")


async def _holds_rows(conn: Conn, slot: int) -> bool:
    return bool(await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {PARTITION.format(slot=slot)})"))


async def _truncate_if_empty(conn: Conn, slot: int, lock_timeout_ms: int) -> bool | None:
    """True: emptied; False: it holds rows; None: not now (locked, or it became current)."""
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
            await _lock(conn, slot)
            if int(await conn.fetchval("SELECT slot FROM chat_outbox_state")) == slot:
                return None  # it became current meanwhile: rows are arriving
            if await _holds_rows(conn, slot):
                return False
            await conn.execute(f"TRUNCATE {PARTITION.format(slot=slot)}")
            return True
    except asyncpg.LockNotAvailableError:
        return None


async def dead_rows(conn: Conn, limit: int = 100) -> list[asyncpg.Record]:
    """The first ``limit`` dead rows, in id order."""
    return list(
        await conn.fetch(
            """
            SELECT id, session_id, routing_key, event_type, retry_count, last_error, created_at
            FROM chat_message_outbox_dead ORDER BY id LIMIT $1
            """,
            limit,
        )
    )


async def count_dead(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM chat_message_outbox_dead"))


async def requeue(conn: Conn, ids: list[int] | None) -> list[int]:
    """Dead rows back to the outbox, attempts reset, due now (all of them when ``ids`` is
    None); then wake the relays. Returns the ids moved. Runs its own transaction."""
    async with conn.transaction():
        rows = await conn.fetch(
            """
            WITH moved AS (
                DELETE FROM chat_message_outbox_dead
                WHERE $1::bigint[] IS NULL OR id = ANY($1::bigint[])
                RETURNING id, session_id, exchange, routing_key, event_type, headers, payload,
                          created_at, last_error
            )
            INSERT INTO chat_message_outbox (id, session_id, exchange, routing_key, event_type,
                                             headers, payload, created_at, last_error)
            SELECT id, session_id, exchange, routing_key, event_type, headers, payload,
                   created_at, last_error
            FROM moved
            RETURNING id
            """,
            ids,
        )
        if rows:
            await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return sorted(r["id"] for r in rows)
