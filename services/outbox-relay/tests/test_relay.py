"""In-process relays on the real PostgreSQL and RabbitMQ: order, no duplicates, wake-up,
routing, the latency histogram, the rotation of the outbox's partitions. (How fast rows go
is measured by the benchmark, bench/, not asserted here.)"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from prometheus_client import REGISTRY

from chat_testing.waiting import eventually
from outbox_relay import metrics

from .conftest import (
    Broker,
    Insert,
    Observed,
    RelayProcesses,
    autovacuum_off,
    relay_settings,
    running_relay,
    statuses,
    until_listening,
)


async def test_two_relays_publish_a_thousand_rows_once_each_in_session_order(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed
) -> None:
    sessions = [uuid.uuid4() for _ in range(50)]
    settings = relay_settings(database_url, batch_size=40)
    async with running_relay(settings) as one, running_relay(settings) as two:
        ids: list[int] = []
        for chunk in range(10):  # committed in ten transactions while the relays run
            ids += await insert([sessions[(chunk * 100 + i) % 50] for i in range(100)])
        await observed.wait_for(1000)
        await asyncio.sleep(0.3)  # a negative check: a duplicate would show up by now
    print(f"\nrows published by each relay: {one.published}, {two.published}")
    assert one.published + two.published == 1000
    assert one.published > 0
    assert two.published > 0
    published = observed.ids()
    assert len(published) == 1000
    assert sorted(published) == sorted(ids)  # none lost, none twice
    for session, order in observed.per_session().items():
        assert order == sorted(order), f"session {session} out of order"
    assert await statuses(db_pool) == {}  # every row published and gone


async def test_notify_wakes_the_relay_long_before_the_poll(
    database_url: str, insert: Insert, observed: Observed
) -> None:
    """Rows committed one at a time, each once the previous one arrived, come out long before
    the poll (60 s) could bring them: NOTIFY wakes the relay. (The relay's first round and the
    catch-up round that LISTEN starts may take the first two; the other three need a NOTIFY.)
    How soon they come is the benchmark's to measure."""
    settings = relay_settings(database_url, poll_interval_seconds=60.0)
    async with running_relay(settings) as relay:
        await until_listening(relay)
        for n in range(5):
            await insert([uuid.uuid4()])
            await observed.wait_for(n + 1, within=10.0)  # not the 60 s poll


async def test_without_notify_the_poll_still_finds_rows(
    database_url: str, insert: Insert, observed: Observed
) -> None:
    async with running_relay(relay_settings(database_url, poll_interval_seconds=0.3)):
        await insert([uuid.uuid4(), None], notify=False)
        await observed.wait_for(2, within=5)


async def test_the_listener_comes_back_after_its_connection_is_killed(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed
) -> None:
    settings = relay_settings(database_url, poll_interval_seconds=60.0)
    async with running_relay(settings) as relay:
        await until_listening(relay)
        killed = await db_pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            f"outbox-relay listen {settings.instance_id}",
        )
        assert killed == 1

        async def listening_again() -> bool:
            return relay.listens == 2 and relay.listening

        await eventually(listening_again, within=10)
        # Woken by NOTIFY again, not by the 60 s poll: the catch-up round that the new LISTEN
        # starts may take the first row, not the second (committed once the first arrived).
        for n in range(2):
            await insert([uuid.uuid4()])
            await observed.wait_for(n + 1, within=10.0)


async def test_cc_header_reaches_the_extra_routing_keys(
    database_url: str, insert: Insert, broker: Broker
) -> None:
    user = await broker.observe("user.alice")
    session = uuid.uuid4()
    await insert([session], headers={"CC": ["user.alice", "user.bob"]})
    async with running_relay(relay_settings(database_url)):
        await user.wait_for(1, within=5)
    [message] = user.messages
    assert message.routing_key == f"session.{session}"
    assert message.headers["x-event"] == "message"
    assert message.content_type == "application/json"
    assert message.type == "message"


async def test_an_unroutable_event_is_published_not_retried(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, broker: Broker
) -> None:
    """No queue bound: nobody of that session is connected; clients catch up by seq."""
    retries_before = REGISTRY.get_sample_value("chat_outbox_retries_total")
    await insert([uuid.uuid4()])
    async with running_relay(relay_settings(database_url)):

        async def published() -> bool:
            return (await statuses(db_pool)) == {}

        await eventually(published, within=5)
    assert REGISTRY.get_sample_value("chat_outbox_retries_total") == retries_before


def _latency_count() -> float:
    samples = next(iter(metrics.LATENCY.collect())).samples
    return next(s.value for s in samples if s.name.endswith("_count"))


async def test_the_latency_histogram_times_every_row_published(
    database_url: str, insert: Insert, observed: Observed
) -> None:
    """Rows committed one at a time: each is timed in chat_outbox_publish_latency_seconds.
    (The latency itself is the benchmark's to measure, under a controlled load.)"""
    before = _latency_count()
    async with running_relay(relay_settings(database_url)) as relay:
        await until_listening(relay)
        for n in range(20):
            await insert([uuid.uuid4()])
            await observed.wait_for(n + 1, within=10)
    # stopped: every round is written back, its rows timed
    assert _latency_count() - before >= 20


async def test_the_relay_rotates_the_outbox_and_truncates_what_it_drained(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed
) -> None:
    """Rows published from a partition leave dead rows behind; once the current slot has moved
    on, the relay empties that partition with TRUNCATE (no VACUUM needed). The slot is not due
    to move until the test makes it due, so the dead rows are seen before they go; autovacuum is
    kept off the partitions meanwhile (see ``autovacuum_off``)."""

    def count(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    rotations, truncations = (
        count("chat_outbox_rotations_total"),
        count("chat_outbox_truncations_total"),
    )
    settings = relay_settings(database_url, rotate_interval_seconds=3600, rotate_check_seconds=0.1)
    async with autovacuum_off(db_pool), running_relay(settings):
        await db_pool.execute("UPDATE chat_outbox_state SET rotated_at = now()")
        slot = await db_pool.fetchval("SELECT slot FROM chat_outbox_state")
        size = f"SELECT pg_relation_size('chat_message_outbox_{int(slot)}')"
        first = await insert([uuid.uuid4() for _ in range(200)])  # into the current slot
        await observed.wait_for_all(first)
        assert await db_pool.fetchval(size) > 0  # published and deleted: dead rows

        # The slot is due: the relay moves it on, then truncates the drained partition.
        await db_pool.execute("UPDATE chat_outbox_state SET rotated_at = now() - interval '2 h'")

        async def partition_emptied() -> bool:
            return bool(await db_pool.fetchval(f"{size} = 0"))

        await eventually(partition_emptied, within=5)
        assert await db_pool.fetchval("SELECT slot FROM chat_outbox_state") != slot
        more = await insert([uuid.uuid4() for _ in range(10)])  # into the new current slot
        await observed.wait_for_all(more)
    assert sorted(observed.ids()) == sorted(first + more)
    assert count("chat_outbox_rotations_total") > rotations
    assert count("chat_outbox_truncations_total") > truncations


async def test_backlog_metrics_follow_the_table(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed
) -> None:
    await insert([uuid.uuid4() for _ in range(3)], notify=False)
    await db_pool.execute("UPDATE chat_message_outbox SET created_at = now() - interval '1 min'")
    async with running_relay(relay_settings(database_url)) as relay:
        await relay.refresh_stats()
        pending = REGISTRY.get_sample_value("chat_outbox_pending_rows")
        lag = REGISTRY.get_sample_value("chat_outbox_oldest_pending_seconds")
        assert pending is not None
        assert lag is not None
        assert pending == 0 or (pending <= 3 and lag >= 59)  # unless already published
        await observed.wait_for(3)

        async def all_published() -> bool:
            return await statuses(db_pool) == {}

        await eventually(all_published)
        await relay.refresh_stats()
        assert REGISTRY.get_sample_value("chat_outbox_pending_rows") == 0
        assert REGISTRY.get_sample_value("chat_outbox_oldest_pending_seconds") == 0


async def test_a_backlog_goes_out_in_batches(
    db_pool: asyncpg.Pool, insert: Insert, observed: Observed, relay_processes: RelayProcesses
) -> None:
    """10,000 rows committed at once (a broker outage's backlog) drained by one relay process:
    many rows per claim and per confirm round. Prints the rate (run with -s)."""
    sessions = [uuid.uuid4() for _ in range(50)]
    ids = await insert([sessions[i % 50] for i in range(10_000)], notify=False)
    relay_processes.start(BATCH_SIZE="500")
    await observed.wait_for_all(ids, within=60)
    first, last = min(observed.arrival.values()), max(observed.arrival.values())
    print(
        f"\n10000 rows drained by one relay process in {last - first:.2f} s after its first"
        f" publish ({10_000 / (last - first):.0f} rows/s)"
    )
    assert sorted(observed.ids()) == ids
    for session, order in observed.per_session().items():
        assert order == sorted(order), session
