"""PostgreSQL helpers (asyncpg)."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy


async def keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Nothing to undo: the services set no session state (no SET, LISTEN or advisory locks on
    pooled connections). asyncpg still rolls back a transaction left open before calling this,
    so only its default reset query (one more round trip per borrow) is skipped."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, command_timeout=10, reset=keep_session
    )
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")


# A connection as repositories take it: a plain connection or one borrowed from a pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
