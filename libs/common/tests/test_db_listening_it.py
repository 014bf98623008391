"""``db.hold_listening``: a LISTEN connection of one's own is held until it is lost (its
termination, at once) or the caller stops, on the real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg

from chat_common import db

BOUND = 5.0  # s: every case below ends in a fraction of it, or the hold is stuck


async def test_a_terminated_backend_ends_the_hold_at_once(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    admin = await asyncpg.connect(database_url)
    try:
        await conn.add_listener("chat_test_channel", lambda *_: None)
        holding = asyncio.create_task(db.hold_listening(conn, check_seconds=60))
        await asyncio.sleep(0.1)
        assert not holding.done()
        await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        # a minute between checks: only the termination listener can end it this soon
        await asyncio.wait_for(holding, BOUND)
        assert conn.is_closed()
    finally:
        await admin.close()
        conn.terminate()


async def test_a_connection_closed_before_the_hold_is_not_held(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    await conn.close()
    await asyncio.wait_for(db.hold_listening(conn, check_seconds=60), BOUND)


async def test_stop_ends_the_hold_and_leaves_the_connection_open(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        stop = asyncio.Event()
        holding = asyncio.create_task(db.hold_listening(conn, stop, check_seconds=0.1))
        await asyncio.sleep(0.3)  # a few checks (SELECT 1) pass meanwhile
        assert not holding.done()
        stop.set()
        await asyncio.wait_for(holding, BOUND)
        assert not conn.is_closed()
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
