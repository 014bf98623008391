"""Faults around the relay: the broker cut off or stalled, the relay process killed or told to
stop. Nothing committed may be lost; duplicates are allowed, disorder of last copies is not."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from prometheus_client import REGISTRY

from chat_testing.tcpproxy import TcpProxy
from chat_testing.waiting import eventually
from outbox_relay.app import open_pool
from outbox_relay.repository import Claimed

from .conftest import (
    AMQP_URL,
    Insert,
    Interposed,
    Observed,
    RelayProcesses,
    held_rows,
    relay_settings,
    running_relay,
    statuses,
)


def assert_sessions_in_order(observed: Observed, *, late_copies: bool = False) -> None:
    """Per session, the first copy of each row comes in id order: a row never overtakes an
    older one (what the edge's gate needs, which drops a seq already delivered). Unless
    ``late_copies``, the last copies too: a round published again comes in order as well.

    ``late_copies``: a connection the relay abandoned in a stall may still hand the broker its
    publishes after the round that replaced it (the bytes were on their way), so a copy of an
    older row can come after a newer row's; the edge drops it as already delivered."""
    for session, order in observed.per_session().items():
        firsts = list(dict.fromkeys(order))
        assert firsts == sorted(firsts), session
        if not late_copies:
            lasts = list(reversed(dict.fromkeys(reversed(order))))
            assert lasts == sorted(lasts), session


async def stop_mid_batch(pool: asyncpg.Pool, process: subprocess.Popen[bytes]) -> int:
    """SIGSTOP the relay at a moment its round holds rows locked; how many it holds."""
    for _ in range(200):
        os.kill(process.pid, signal.SIGSTOP)
        held = await held_rows(pool)
        if held:
            return held
        os.kill(process.pid, signal.SIGCONT)
        await asyncio.sleep(0.005)
    raise AssertionError("never caught the relay holding a batch")


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
            # a negative check: meanwhile the relay tries again (after 0.1 s, 0.2 s...) and
            # neither publishes nor counts an attempt against the rows
            await asyncio.sleep(0.5)
            assert len(observed.messages) == 1
            counts = await db_pool.fetch(
                "SELECT retry_count FROM chat_message_outbox WHERE id = ANY($1::bigint[])",
                waiting,
            )
            assert [r["retry_count"] for r in counts] == [0] * len(waiting)
            proxy.restore()
            await observed.wait_for_all(waiting, within=30)
    assert sorted(set(observed.ids())) == sorted(first + waiting)


async def test_a_stalled_broker_times_out_and_nothing_is_lost(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed
) -> None:
    """The broker stops answering (SIGSTOP, a blocked connection): the round times out, its
    rows are let go without counting an attempt, and go once the broker answers again."""
    sessions = [uuid.uuid4() for _ in range(5)]
    retries_before = REGISTRY.get_sample_value("chat_outbox_retries_total") or 0.0
    async with TcpProxy("127.0.0.1", 5672) as proxy:
        amqp_url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        settings = relay_settings(database_url, amqp_url=amqp_url, publish_timeout_seconds=0.5)
        async with running_relay(settings):
            first = await insert([sessions[0]])
            await observed.wait_for(1)
            proxy.latency = 2.0
            stalled = await insert([sessions[i % 5] for i in range(50)])

            async def holding() -> bool:  # a round has them, its publish stalled
                return await held_rows(db_pool) > 0

            async def let_go() -> bool:  # after the timeout, not held for the 30 s lease
                return await held_rows(db_pool) == 0

            await eventually(holding)
            # part of the scenario: the broker stays stalled for 1.5 s (three publish timeouts)
            await asyncio.sleep(1.5)
            await eventually(let_go, within=5)
            proxy.latency = 0.0
            await observed.wait_for_all(stalled, within=30)
    assert sorted(set(observed.ids())) == sorted(first + stalled)
    assert_sessions_in_order(observed, late_copies=True)
    ids = observed.ids()
    assert {i for i in ids if ids.count(i) > 1} <= set(stalled)  # copies: of stalled rows only
    assert (REGISTRY.get_sample_value("chat_outbox_retries_total") or 0.0) == retries_before


async def test_a_killed_relay_loses_nothing(
    db_pool: asyncpg.Pool, insert: Insert, observed: Observed, relay_processes: RelayProcesses
) -> None:
    sessions = [uuid.uuid4() for _ in range(20)]
    ids = await insert([sessions[i % 20] for i in range(3000)], notify=False)
    options = {
        "BATCH_SIZE": "200",
        "LEASE_SECONDS": "1",
        "PUBLISH_TIMEOUT_SECONDS": "0.5",
        "POLL_INTERVAL_SECONDS": "0.2",
    }
    first = relay_processes.start(None, **options)
    await observed.wait_for(300, within=30)
    assert await stop_mid_batch(db_pool, first) > 0
    os.kill(first.pid, signal.SIGKILL)  # mid-batch: its round dies with its connections
    first.wait(10)
    relay_processes.start(None, **options)
    await observed.wait_for_all(ids, within=60)
    assert set(observed.ids()) == set(ids)  # every row at least once
    assert_sessions_in_order(observed)

    async def all_published() -> bool:
        return await statuses(db_pool) == {}

    await eventually(all_published)


async def test_sigterm_finishes_or_lets_go_the_batch_in_hand(
    database_url: str,
    db_pool: asyncpg.Pool,
    insert: Insert,
    observed: Observed,
    relay_processes: RelayProcesses,
    tmp_path: Path,
) -> None:
    sessions = [uuid.uuid4() for _ in range(20)]
    ids = await insert([sessions[i % 20] for i in range(3000)], notify=False)
    log = tmp_path / "relay.log"
    process = relay_processes.start(log, BATCH_SIZE="200", LEASE_SECONDS="60", LOG_LEVEL="INFO")
    await observed.wait_for(300, within=30)
    os.kill(process.pid, signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert await asyncio.to_thread(process.wait, 15) in (0, -signal.SIGTERM)
    assert "relay stopped; no row left held" in log.read_text()
    assert await held_rows(db_pool) == 0  # another relay can go on at once
    async with running_relay(relay_settings(database_url, amqp_url=AMQP_URL)):
        await observed.wait_for_all(ids, within=30)
    assert_sessions_in_order(observed)


async def test_a_relay_paused_past_its_lease_changes_nothing_it_lost(
    database_url: str,
    db_pool: asyncpg.Pool,
    insert: Insert,
    observed: Observed,
    relay_processes: RelayProcesses,
) -> None:
    """SIGSTOP a relay holding a batch for longer than its lease: the server ends its round's
    transaction (or, when it stopped in the middle of a statement, another relay does), another
    relay takes the rows over and publishes them; when the first wakes up, its late write-back
    and commit fail and change nothing."""
    sessions = [uuid.uuid4() for _ in range(10)]
    ids = await insert([sessions[i % 10] for i in range(2000)], notify=False)
    paused = relay_processes.start(
        BATCH_SIZE="200", LEASE_SECONDS="1", PUBLISH_TIMEOUT_SECONDS="0.5"
    )
    await observed.wait_for(100, within=30)
    await stop_mid_batch(db_pool, paused)
    # The other relay has the same lease, as every relay of a deployment does: it ends the
    # paused round once the lease is up, also when the relay stopped in the middle of a
    # statement's messages (where idle_in_transaction_session_timeout does not apply).
    same_lease = relay_settings(database_url, lease_seconds=1.0, publish_timeout_seconds=0.5)
    try:
        async with running_relay(same_lease):
            await observed.wait_for_all(ids, within=30)  # after the lease ran out
            os.kill(paused.pid, signal.SIGCONT)
            # a negative check: the paused relay finishes its stale round meanwhile (its
            # write-back fails) and changes nothing
            await asyncio.sleep(1.0)
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    assert paused.poll() is None  # it carries on
    assert await statuses(db_pool) == {}
    assert set(observed.ids()) == set(ids)
    firsts = {s: list(dict.fromkeys(o)) for s, o in observed.per_session().items()}
    assert all(order == sorted(order) for order in firsts.values())


async def test_a_transaction_left_open_by_a_relay_ends_with_its_lease(
    database_url: str, insert: Insert, observed: Observed
) -> None:
    """A relay stopped in the middle of its round keeps row locks that SKIP LOCKED steps
    around; the server ends that transaction once the lease is up, and the rows go out."""
    session = uuid.uuid4()
    ids = await insert([session] * 20, notify=False)
    lease = relay_settings(database_url, lease_seconds=1.0, publish_timeout_seconds=0.5)
    stalled = await open_pool(lease)
    try:
        conn = await stalled.acquire()
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(
            "SELECT 1 FROM chat_message_outbox WHERE id = $1 FOR UPDATE", ids[0]
        )  # holds the session's first row locked, as a paused relay's round would
        async with running_relay(relay_settings(database_url)):
            await observed.wait_for_all(ids, within=15)
        assert observed.ids() == ids
    finally:
        stalled.terminate()


async def test_sigterm_with_the_broker_stalled_lets_the_rows_go_within_the_grace(
    database_url: str,
    db_pool: asyncpg.Pool,
    insert: Insert,
    observed: Observed,
    relay_processes: RelayProcesses,
    tmp_path: Path,
) -> None:
    """The broker accepts but stops answering mid-round; SIGTERM: within the grace the relay
    rolls its round back (the 60 s lease is not waited for), and another relay sends the
    rows."""
    sessions = [uuid.uuid4() for _ in range(5)]
    first = await insert([sessions[0]], notify=False)
    async with TcpProxy("127.0.0.1", 5672) as proxy:
        log = tmp_path / "relay.log"
        process = relay_processes.start(
            log,
            AMQP_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
            LEASE_SECONDS="60",
            PUBLISH_TIMEOUT_SECONDS="4",
            SHUTDOWN_GRACE_SECONDS="7",
            POLL_INTERVAL_SECONDS="0.2",
            LOG_LEVEL="INFO",
        )
        await observed.wait_for_all(first, within=30)
        proxy.latency = 120.0  # every byte from now on is held: a stalled broker
        stalled = await insert([sessions[i % 5] for i in range(50)])

        async def holding() -> bool:
            return await held_rows(db_pool) > 0

        await eventually(holding, within=10)
        signalled = asyncio.get_running_loop().time()
        os.kill(process.pid, signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) in (0, -signal.SIGTERM)
        took = asyncio.get_running_loop().time() - signalled
        leftovers = await held_rows(db_pool)
    assert leftovers == 0, log.read_text()
    assert took < 7 + 3, log.read_text()  # the grace, and the broker connection's bounded close
    assert "relay stopped; no row left held" in log.read_text()
    assert (
        await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox WHERE retry_count > 0")
        == 0
    )  # a stalled broker is nobody's fault
    async with running_relay(relay_settings(database_url, lease_seconds=60.0)):
        await observed.wait_for_all(stalled, within=20)
    assert set(observed.ids()) == set(first + stalled)
    assert_sessions_in_order(observed)


class RowLocker:
    """Holds the outbox in SHARE mode in a transaction of its own (as a slow or stuck
    statement would), from the moment a relay's round has its confirms until :meth:`unlock`:
    the round's DELETE waits for it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.pool.PoolConnectionProxy | None = None
        self._transaction: asyncpg.transaction.Transaction | None = None
        self.locked = asyncio.Event()

    async def lock(self, rows: Sequence[Claimed]) -> None:
        if self.locked.is_set():
            return
        self._conn = await self._pool.acquire()
        self._transaction = self._conn.transaction()
        await self._transaction.start()
        await self._conn.execute("LOCK TABLE chat_message_outbox IN SHARE MODE")
        self.locked.set()

    async def unlock(self) -> None:
        if self._transaction is not None and self._conn is not None:
            await self._transaction.rollback()
            await self._pool.release(self._conn)
            self._transaction = self._conn = None


async def stop_during_a_stuck_write_back(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, unlock_after: float
) -> tuple[list[int], float]:
    """A relay whose write-back is blocked on row locks is stopped; the locks go after
    ``unlock_after`` seconds. The rows' ids, and how long the stop took."""
    ids = await insert([uuid.uuid4() for _ in range(5)])
    locker = RowLocker(db_pool)
    settings = relay_settings(
        database_url, lease_seconds=60.0, publish_timeout_seconds=0.5, shutdown_grace_seconds=3.0
    )
    try:
        async with running_relay(settings, lambda p: Interposed(p, locker.lock)) as relay:
            async with asyncio.timeout(10):
                await locker.locked.wait()

            async def write_back_waits() -> bool:
                return bool(
                    await db_pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    )
                )

            await eventually(write_back_waits, what="the write-back waits for the locks")
            loop = asyncio.get_running_loop()
            started = loop.time()
            stopping = asyncio.create_task(relay.stop())
            await asyncio.sleep(unlock_after)
            await locker.unlock()
            await stopping
            took = loop.time() - started
    finally:
        await locker.unlock()
    return ids, took


async def test_a_write_back_under_way_at_the_end_of_the_grace_is_finished(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed
) -> None:
    """Grace 3 s: the loop is cut short after 1 s (3 s less the 2 s margin) while its
    write-back waits for a lock; the write-back is not cancelled with it (that would roll the
    round back and publish its rows twice) and commits when the lock goes at 1.5 s."""
    ids, took = await stop_during_a_stuck_write_back(
        database_url, db_pool, insert, unlock_after=1.5
    )
    assert took < 3 + 5  # bounded: the 3 s grace (and a margin), not the 60 s lease
    await observed.wait_for_all(ids, within=5)
    assert await statuses(db_pool) == {}


async def test_a_write_back_stuck_past_the_grace_is_rolled_back_at_stop(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed
) -> None:
    """The write-back is still stuck when its extra second is over (at 2 s): it is given up
    and the round rolled back, so its rows are free as soon as the lock goes (2.4 s), within
    the grace, with no attempt counted. Another relay sends them at once."""
    ids, took = await stop_during_a_stuck_write_back(
        database_url, db_pool, insert, unlock_after=2.4
    )
    assert took < 3 + 5  # bounded: the 3 s grace (and a margin), not the 60 s lease
    assert await statuses(db_pool) == {"waiting": 5}
    assert await held_rows(db_pool) == 0
    rows = await db_pool.fetch("SELECT retry_count FROM chat_message_outbox")
    assert {r["retry_count"] for r in rows} == {0}
    async with running_relay(relay_settings(database_url)):
        await observed.wait_for_all(ids, within=5)


async def test_a_round_that_dies_between_the_confirms_and_its_commit_goes_out_again(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed
) -> None:
    """The broker confirmed the round, then the relay died before its commit (a kill -9 there
    ends the transaction the same way): nothing was deleted, so the rows go out again. Each
    reaches the consumer twice, in session order both times; consumers drop the copy by
    ``messageId``/``seq``."""
    session = uuid.uuid4()
    ids = await insert([session] * 5 + [uuid.uuid4()], notify=False)
    died = False

    async def die_once(rows: Sequence[Claimed]) -> None:
        nonlocal died
        if not died:
            died = True
            raise RuntimeError("killed between the confirms and the commit")

    settings = relay_settings(database_url, batch_size=10)
    async with running_relay(settings, lambda p: Interposed(p, die_once)):
        await observed.wait_for(2 * len(ids), within=15)

        async def gone() -> bool:
            return await statuses(db_pool) == {}

        await eventually(gone)
    seen = observed.ids()
    assert sorted(seen) == sorted(ids + ids)
    assert_sessions_in_order(observed)
    assert observed.per_session()[str(session)] == ids[:5] + ids[:5]
