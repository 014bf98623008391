"""The relay on the real PostgreSQL and RabbitMQ: order, no duplicates, wake-up, failures."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import asyncpg

from chat_testing.tcpproxy import TcpProxy
from outbox_relay import repository

from .conftest import AMQP_URL, Insert, Observed, relay_settings, running_relay


def per_session(observed: Observed) -> dict[str, list[int]]:
    order: dict[str, list[int]] = {}
    for message in observed.messages:
        order.setdefault(str(message.headers["x-session-id"]), []).append(
            int(str(message.message_id).removeprefix("outbox-"))
        )
    return order


async def statuses(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT status, count(*) AS n FROM chat_message_outbox GROUP BY 1")
    return {r["status"]: r["n"] for r in rows}


async def test_two_relays_publish_a_thousand_rows_once_each_in_session_order(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed
) -> None:
    sessions = [uuid.uuid4() for _ in range(50)]
    settings = relay_settings(database_url, batch_size=40)
    async with running_relay(settings), running_relay(settings):
        ids: list[int] = []
        for chunk in range(10):  # committed in ten transactions while the relays run
            ids += await insert([sessions[(chunk * 100 + i) % 50] for i in range(100)])
        await observed.wait_for(1000)
        await asyncio.sleep(0.3)
    published = observed.ids()
    assert len(published) == 1000
    assert sorted(published) == sorted(ids)  # none lost, none twice
    for session, order in per_session(observed).items():
        assert order == sorted(order), f"session {session} out of order"
    assert await statuses(db_pool) == {"published": 1000}


async def test_notify_wakes_the_relay_long_before_the_poll(
    database_url: str, insert: Insert, observed: Observed
) -> None:
    settings = relay_settings(database_url, poll_interval_seconds=5.0)
    async with running_relay(settings) as relay:
        while not relay.listening:  # noqa: ASYNC110 - the listener exposes no event
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        latencies = []
        for _ in range(5):
            started = time.perf_counter()
            await insert([uuid.uuid4()])
            await observed.wait_for(len(observed.messages) + 1, within=4.0)
            latencies.append(time.perf_counter() - started)
    # with only the 5 s poll, each would wait seconds; NOTIFY makes it milliseconds
    assert max(latencies) < 1.0, latencies


async def test_without_notify_the_poll_still_finds_rows(
    database_url: str, insert: Insert, observed: Observed
) -> None:
    async with running_relay(relay_settings(database_url, poll_interval_seconds=0.3)):
        await insert([uuid.uuid4(), None], notify=False)
        await observed.wait_for(2, within=5)


async def test_a_row_that_always_fails_ends_dead_without_blocking_others(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed, exchange_name: str
) -> None:
    poisoned = uuid.uuid4()
    settings = relay_settings(database_url, max_attempts=3)
    async with running_relay(settings):
        bad = await insert([poisoned], exchange=f"{exchange_name}.missing")
        good = await insert([uuid.uuid4(), uuid.uuid4()])
        await observed.wait_for(2)
        async with asyncio.timeout(10):
            while (await statuses(db_pool)).get("dead") != 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        row = await db_pool.fetchrow("SELECT * FROM chat_message_outbox WHERE id = $1", bad[0])
        assert row["status"] == "dead"
        assert row["retry_count"] == 3
        assert "NOT_FOUND" in row["last_error"] or "NotFound" in row["last_error"]
        # a dead row does not block its session's later rows
        later = await insert([poisoned])
        await observed.wait_for(3)
        assert sorted(observed.ids()) == sorted(good + later)


async def test_cli_lists_and_requeues_dead_rows(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed, exchange_name: str
) -> None:
    missing = f"{exchange_name}.later"
    [row_id] = await insert([uuid.uuid4()], exchange=missing)
    await db_pool.execute(
        "UPDATE chat_message_outbox SET status = 'dead', retry_count = 10, last_error = 'boom'"
        " WHERE id = $1",
        row_id,
    )
    env = {**os.environ, "DATABASE_URL": database_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "outbox_relay", "dead", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    listed = cli("list")
    assert listed.returncode == 0
    assert str(row_id) in listed.stdout
    assert "boom" in listed.stdout
    # once the exchange exists, a requeued row goes out
    await db_pool.execute("UPDATE chat_message_outbox SET exchange = $1", exchange_name)
    async with running_relay(relay_settings(database_url)):
        requeued = cli("requeue", str(row_id))
        assert requeued.returncode == 0, requeued.stderr
        assert "requeued 1" in requeued.stdout
        await observed.wait_for(1)
    assert observed.ids() == [row_id]
    assert "no dead rows" in cli("list").stdout
    assert cli("requeue", "--all").returncode == 0


async def test_broker_unreachable_rows_wait_then_go(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed
) -> None:
    async with TcpProxy("127.0.0.1", 5672) as proxy:
        amqp_url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        async with running_relay(relay_settings(database_url, amqp_url=amqp_url)):
            first = await insert([uuid.uuid4()])
            await observed.wait_for(1)
            proxy.cut()
            waiting = await insert([uuid.uuid4() for _ in range(20)])
            await asyncio.sleep(2.0)
            assert len(observed.messages) == 1
            counts = await db_pool.fetch(
                "SELECT retry_count FROM chat_message_outbox WHERE id = ANY($1::bigint[])",
                waiting,
            )
            assert {r["retry_count"] for r in counts} == {0}  # an outage is no row's fault
            proxy.restore()
            await observed.wait_for(21, within=30)
    assert sorted(observed.ids()) == sorted(first + waiting)


async def test_a_killed_relay_loses_nothing(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed
) -> None:
    sessions = [uuid.uuid4() for _ in range(20)]
    ids = await insert([sessions[i % 20] for i in range(3000)], notify=False)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AMQP_URL": AMQP_URL,
        "PORT": "0",
        "BATCH_SIZE": "200",
        "LEASE_SECONDS": "1",
        "POLL_INTERVAL_SECONDS": "0.2",
        "LOG_LEVEL": "WARNING",
    }

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "outbox_relay"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    first = start()
    try:
        await observed.wait_for(300, within=30)
        first.kill()  # SIGKILL mid-stream: claimed rows keep their (short) lease
        first.wait(10)
        second = start()
        try:
            await observed.wait_for_all(ids, within=60)
        finally:
            second.terminate()
            second.wait(15)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert set(observed.ids()) == set(ids)  # every row at least once
    for session, order in per_session(observed).items():
        deduplicated = list(dict.fromkeys(order))
        assert deduplicated == sorted(deduplicated), session
    assert await statuses(db_pool) == {"published": 3000}


async def test_a_stale_claimer_cannot_mark_rows_it_lost(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    await insert([uuid.uuid4()], notify=False)
    stale, fresh = uuid.uuid4(), uuid.uuid4()
    async with db_pool.acquire() as conn:
        [row] = await repository.claim(conn, stale, 10, 0.05)
        await asyncio.sleep(0.1)  # the lease runs out (a GC pause, SIGSTOP...)
        [again] = await repository.claim(conn, fresh, 10, 30)
        assert again.id == row.id
        assert await repository.mark_published(conn, stale, [row.id]) == 0
        assert await repository.mark_published(conn, fresh, [row.id]) == 1


async def test_session_order_holds_across_a_row_in_backoff(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    session = uuid.uuid4()
    first, second = await insert([session, session], notify=False)
    token = uuid.uuid4()
    async with db_pool.acquire() as conn:
        claimed = await repository.claim(conn, token, 1, 30)
        assert [c.id for c in claimed] == [first]
        await repository.mark_failed(
            conn, token, first, dead=False, retry_count=1, delay_seconds=60, error="nack"
        )
        assert await repository.claim(conn, uuid.uuid4(), 10, 30) == []  # second waits
        await repository.mark_failed(
            conn, token, first, dead=False, retry_count=1, delay_seconds=60, error="x"
        )  # no effect: the claim is gone
        await conn.execute("UPDATE chat_message_outbox SET status = 'dead' WHERE id = $1", first)
        assert [c.id for c in await repository.claim(conn, uuid.uuid4(), 10, 30)] == [second]


async def test_purge_removes_old_published_rows_only(db_pool: asyncpg.Pool, insert: Insert) -> None:
    ids = await insert([uuid.uuid4() for _ in range(4)], notify=False)
    await db_pool.execute(
        "UPDATE chat_message_outbox SET status = 'published', sent_at = now() - interval '2 hours'"
        " WHERE id = ANY($1::bigint[])",
        ids[:2],
    )
    await db_pool.execute(
        "UPDATE chat_message_outbox SET status = 'published', sent_at = now() WHERE id = $1",
        ids[2],
    )
    async with db_pool.acquire() as conn:
        assert await repository.purge(conn, 3600) == 2
    left = [r["id"] for r in await db_pool.fetch("SELECT id FROM chat_message_outbox ORDER BY id")]
    assert left == ids[2:]
