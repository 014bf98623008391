"""Does the stack slow down as messages go through it? (``run.py --volume N``)

Measures REST sends at a light rate on the fresh database, pushes N messages through the stack
with bulk sends (each stored, put in the outbox and published like any other), lets it settle,
and measures the same rate again; around each measurement it reads the size and dead rows of
the hot tables. PostgreSQL runs as the machine has it (here: autovacuum off)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import aiohttp
import asyncpg

from generator import SessionSpec

HOT_TABLES = ("chat_message_outbox", "chat_messages", "chat_sessions", "chat_participants")

SIZES = """
SELECT c.relname AS table_name,
       pg_total_relation_size(c.oid) AS total_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       COALESCE(s.n_live_tup, 0) AS live_rows,
       COALESCE(s.n_dead_tup, 0) AS dead_rows
FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p')
  AND (c.relname = ANY($1::text[]) OR c.relname ~ '^chat_message_outbox_[0-9]+$')
ORDER BY c.relname
"""


async def table_sizes(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    """Size (with indexes and TOAST), index size, live and dead rows of the hot tables and of
    the outbox's partitions. A partitioned parent holds no rows itself: its figures are the
    sum of its partitions."""
    rows = await conn.fetch(SIZES, list(HOT_TABLES))
    found = {
        r["table_name"]: {
            k: int(r[k]) for k in ("total_bytes", "index_bytes", "live_rows", "dead_rows")
        }
        for r in rows
    }
    prefix = "chat_message_outbox_"
    partitions = [
        v for k, v in found.items() if k.startswith(prefix) and k[len(prefix) :].isdigit()
    ]
    if partitions:
        found["chat_message_outbox"] = {
            key: sum(p[key] for p in partitions) for key in partitions[0]
        }
    return found


async def push(
    gateway: str, specs: Sequence[SessionSpec], total: int, *, concurrency: int = 8
) -> dict[str, float]:
    """``total`` messages through ``POST /api/chat/messages`` (100 per request, each request
    from one session's first user); how long it took and how many were refused."""
    per_request = 100
    requests = (total + per_request - 1) // per_request
    refused = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(requests):
        queue.put_nowait(n)
    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:

        async def worker() -> None:
            nonlocal refused
            while not queue.empty():
                n = queue.get_nowait()
                spec = specs[n % len(specs)]
                count = min(per_request, total - n * per_request)
                body = {
                    "messages": [
                        {
                            "sessionId": spec.id,
                            "content": f"volume {n}.{i}",
                            "clientMessageId": str(uuid.uuid4()),
                        }
                        for i in range(count)
                    ]
                }
                async with http.post(
                    f"{gateway}/api/chat/messages",
                    json=body,
                    headers={"Authorization": f"Bearer {spec.tokens[0]}"},
                ) as answer:
                    answer.raise_for_status()
                    results = (await answer.json())["results"]
                refused += sum(1 for r in results if r["status"] != 200)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.perf_counter() - started
    return {
        "messages": total,
        "seconds": round(took, 1),
        "refused": refused,
        "msgs_per_s": round(total / took),
    }


async def drained(conn: asyncpg.Connection, within: float = 300.0) -> float:
    """Wait until the outbox is empty (every pushed message published); seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < within:
        if await conn.fetchval("SELECT count(*) FROM chat_message_outbox") == 0:
            break
        await asyncio.sleep(0.5)
    return round(time.perf_counter() - started, 1)


def compare(fresh: dict[str, Any], after: dict[str, Any]) -> dict[str, float | None]:
    """After / fresh for the figures that must not decay."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    return {
        "postgres_cpu_ratio": ratio(
            after["cpu_ms_per_msg"].get("postgres"), fresh["cpu_ms_per_msg"].get("postgres")
        ),
        "stack_cpu_ratio": ratio(after["stack_cpu_ms_per_msg"], fresh["stack_cpu_ms_per_msg"]),
        "p99_ratio": ratio(after["p99_ms"], fresh["p99_ms"]),
    }
