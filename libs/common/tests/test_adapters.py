"""Each adapter translates its driver's faults into the project's tree, once, and leaves the
rest alone: asyncpg's through ``chat_common.db``'s pool, aio-pika's through
``chat_common.amqp.faults``, redis-py's through ``chat_common.redis_client.faults``."""

from __future__ import annotations

import asyncio

import aiormq
import aiormq.exceptions
import asyncpg
import pytest

from chat_common import amqp, db, redis_client
from chat_common.errors import BrokerUnavailable, DatabaseUnavailable, RedisUnavailable


async def _ended_under_a_statement(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        pid = conn.get_server_pid()
        killing = asyncio.create_task(
            pool.execute("SELECT pg_sleep(0.2), pg_terminate_backend($1)", pid)
        )
        try:
            await conn.fetchval("SELECT pg_sleep(5)")
        finally:
            await killing


async def test_the_pool_translates_a_connection_ended_under_a_statement(database_url: str) -> None:
    pool = await db.create_pool(database_url, max_size=2)
    try:
        with pytest.raises(DatabaseUnavailable) as raised:
            await _ended_under_a_statement(pool)
        assert isinstance(raised.value.__cause__, asyncpg.PostgresError | asyncpg.InterfaceError)
        assert await pool.fetchval("SELECT 1") == 1  # the pool goes on with a new connection
    finally:
        await pool.close()


async def _cancelled_by_statement_timeout(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL statement_timeout = 50")
        await conn.execute("SELECT pg_sleep(1)")


async def test_the_pool_translates_a_statement_cancelled_and_an_awaited_acquire(
    database_url: str,
) -> None:
    pool = await db.create_pool(database_url, max_size=1)
    try:
        with pytest.raises(DatabaseUnavailable):  # statement_timeout: QueryCanceledError
            await _cancelled_by_statement_timeout(pool)
        with pytest.raises(DatabaseUnavailable):  # the pool's own methods acquire through it
            await pool.execute("SELECT pg_sleep(1)", timeout=0.05)
        conn = await pool.acquire()  # the awaited form works and is translated alike
        await pool.release(conn)
        await pool.close()
        with pytest.raises(DatabaseUnavailable):
            await pool.acquire()
    finally:
        await pool.close()


async def test_sql_errors_are_left_to_the_caller(database_url: str) -> None:
    pool = await db.create_pool(database_url, max_size=1)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await pool.fetch("SELECT * FROM no_such_table_here")
        async with pool.acquire() as conn:
            await conn.execute("CREATE TEMP TABLE t (k int PRIMARY KEY)")
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute("INSERT INTO t VALUES (1), (1)")
    finally:
        await pool.close()


async def test_a_database_that_refuses_is_unavailable() -> None:
    with pytest.raises(DatabaseUnavailable) as raised:
        await db.create_pool("postgresql://postgres@127.0.0.1:1/none")
    assert isinstance(raised.value.__cause__, OSError)
    assert "127.0.0.1" not in raised.value.detail


def test_broker_faults_are_translated_and_bugs_are_not() -> None:
    with pytest.raises(BrokerUnavailable), amqp.faults():
        raise aiormq.exceptions.ChannelInvalidStateError("channel closed")
    with pytest.raises(BrokerUnavailable), amqp.faults():
        raise aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED")
    with pytest.raises(RuntimeError), amqp.faults():  # not every RuntimeError is the broker
        raise RuntimeError("a bug")


@pytest.mark.integration  # Redis/RabbitMQ of the machine
async def test_a_closed_connection_is_a_broker_fault_as_aiormq_reports_it() -> None:
    """Pins what ``amqp.is_fault`` relies on: aiormq's bare RuntimeError for a channel opened on
    a closed connection (if aiormq changes it, this fails and the rule must follow)."""
    connection = await aiormq.connect("amqp://guest:guest@127.0.0.1:5672/")
    await connection.close()
    with pytest.raises(BrokerUnavailable) as raised, amqp.faults():
        await connection.channel()
    assert type(raised.value.__cause__) is RuntimeError


async def test_redis_that_refuses_is_unavailable() -> None:
    client = redis_client.redis_client("redis://127.0.0.1:1/0", 1.0)
    assert client is not None
    try:
        with pytest.raises(RedisUnavailable) as raised, redis_client.faults("the store (Redis)"):
            await client.ping()
        assert raised.value.detail.startswith("the store (Redis) is unavailable")
        assert "127.0.0.1" not in raised.value.detail
    finally:
        await client.aclose()
