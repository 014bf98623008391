"""The durability limit: how many single-row insert transactions per second PostgreSQL commits
on this machine at a given concurrency, and how many rows per second in batches."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import asyncpg

TABLE = "bench_durability"


@dataclass(frozen=True)
class PgResult:
    concurrency: int
    single_row_tps: float
    batched_rows_per_s: float
    batch_size: int


async def measure(dsn: str, *, concurrency: int, seconds: float, batch: int = 100) -> PgResult:
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    assert pool is not None
    try:
        await pool.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE}"
            " (id uuid PRIMARY KEY, session uuid, seq bigint, body text,"
            "  at timestamptz DEFAULT now())"
        )
        await pool.execute(f"TRUNCATE {TABLE}")
        single = await _run(pool, concurrency, seconds, 1)
        batched = await _run(pool, concurrency, seconds, batch)
        await pool.execute(f"DROP TABLE {TABLE}")
    finally:
        await pool.close()
    return PgResult(concurrency, single, batched, batch)


async def _run(pool: asyncpg.Pool, concurrency: int, seconds: float, batch: int) -> float:
    deadline = time.perf_counter() + seconds
    counts = [0] * concurrency
    body = "x" * 64

    async def worker(i: int) -> None:
        session = uuid.uuid4()
        seq = 0
        async with pool.acquire() as conn:
            while time.perf_counter() < deadline:
                rows = []
                for _ in range(batch):
                    seq += 1
                    rows.append((uuid.uuid4(), session, seq, body))
                async with conn.transaction():
                    await conn.executemany(
                        f"INSERT INTO {TABLE} (id, session, seq, body) VALUES ($1, $2, $3, $4)",
                        rows,
                    )
                counts[i] += batch

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return sum(counts) / (time.perf_counter() - started)
