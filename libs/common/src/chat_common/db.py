"""PostgreSQL helpers (asyncpg)."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy


async def keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Nothing to undo: the services set no session state (no SET, LISTEN or advisory locks on
    pooled connections). asyncpg still rolls back a transaction left open before calling this,
    so only its default reset query (one more round trip per borrow) is skipped."""


# Every statement is planned for its own parameters (a custom plan), never with a cached
# generic plan. asyncpg prepares each statement once per connection, and PostgreSQL switches a
# prepared statement to a generic plan after five executions if it looks no dearer; that plan
# is kept until the statistics change. A generic plan made while a table was nearly empty
# (a fresh database, or one where nothing runs ANALYZE: autovacuum off) scans the whole table
# and stays in use as the table grows: measured, a send batch that read chat_messages by its
# client-id index at 33 buffers went to a full scan of it, 5x the database's CPU per message
# after 200,000 messages (docs/benchmarks.md). Planning each execution costs a fraction of a
# millisecond per statement; a full scan of a large table costs much more.
_SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=10,
        reset=keep_session,
        server_settings=_SERVER_SETTINGS,
    )
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")


# A connection as repositories take it: a plain connection or one borrowed from a pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
