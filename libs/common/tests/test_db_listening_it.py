"""``db.hold_listening``: a LISTEN connection of one's own is held until it is lost (its
termination, at once) or the caller stops; ``db.keep_listening``: a LISTEN kept up across
losses, told to the caller each time; both on the real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg

from chat_common import db
from chat_testing.waiting import eventually

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


async def test_stop_ends_the_hold_at_once_between_checks(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        stop = asyncio.Event()
        holding = asyncio.create_task(db.hold_listening(conn, stop, check_seconds=60))
        await asyncio.sleep(0.1)
        assert not holding.done()
        stop.set()
        # a minute between checks: only the stop itself can end it this soon
        await asyncio.wait_for(holding, BOUND)
    finally:
        await conn.close()


async def test_keep_listening_hears_reconnects_after_a_loss_and_stops(database_url: str) -> None:
    channel = "chat_test_keep"
    heard: list[str] = []
    states: list[bool] = []
    stop = asyncio.Event()
    keeping = asyncio.create_task(
        db.keep_listening(
            database_url,
            channel,
            lambda _conn, _pid, _channel, payload: heard.append(payload),
            states.append,
            application_name="chat test keep-listening",
            meanwhile="nothing",
            stop=stop,
        )
    )
    admin = await asyncpg.connect(database_url)
    try:
        await eventually(lambda: states == [True], what="the first LISTEN")
        await admin.execute(f"NOTIFY {channel}, 'one'")
        await eventually(lambda: heard == ["one"], what="the first notification")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'chat test keep-listening'"
        )
        await eventually(lambda: states == [True, False, True], what="a new LISTEN", within=BOUND)
        await admin.execute(f"NOTIFY {channel}, 'two'")
        await eventually(lambda: heard == ["one", "two"], what="a notification after it")
        stop.set()
        await asyncio.wait_for(keeping, BOUND)
        assert states == [True, False, True, False]
    finally:
        keeping.cancel()
        await admin.close()


async def test_keep_listening_retries_an_unreachable_database_until_stopped() -> None:
    states: list[bool] = []
    stop = asyncio.Event()
    keeping = asyncio.create_task(
        db.keep_listening(
            "postgresql://postgres@127.0.0.1:1/none",
            "chat_test_keep",
            lambda *_: None,
            states.append,
            application_name="chat test keep-listening",
            meanwhile="nothing",
            stop=stop,
        )
    )
    try:
        await asyncio.sleep(0.5)  # a few refused attempts (0.2 s, then 0.4 s apart)
        assert not keeping.done()
        stop.set()  # ends the back-off's wait at once
        await asyncio.wait_for(keeping, 1.0)
        assert states == []
    finally:
        keeping.cancel()
