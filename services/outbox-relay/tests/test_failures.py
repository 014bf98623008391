"""Rows that cannot be published: retries with backoff, the dead state, the operator CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Sequence

import aio_pika
import asyncpg
import pytest
from prometheus_client import REGISTRY

from chat_common.errors import DatabaseUnavailable
from chat_testing.waiting import eventually
from outbox_relay.app import open_pool
from outbox_relay.publisher import RabbitPublisher
from outbox_relay.relay import Relay
from outbox_relay.repository import Claimed

from .conftest import (
    Broker,
    Insert,
    Interposed,
    Observed,
    bury_rows,
    held_rows,
    outbox_id,
    relay_settings,
    running_relay,
    statuses,
)


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def row(pool: asyncpg.Pool, row_id: int) -> asyncpg.Record:
    """The row, in the outbox or (once dead) in the dead table."""
    record = await pool.fetchrow(
        "SELECT id, retry_count, last_error FROM chat_message_outbox WHERE id = $1"
        " UNION ALL"
        " SELECT id, retry_count, last_error FROM chat_message_outbox_dead WHERE id = $1",
        row_id,
    )
    assert record is not None
    return record


async def test_a_row_naming_a_missing_exchange_ends_dead_and_blocks_nobody(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed, exchange_name: str
) -> None:
    poisoned = uuid.uuid4()
    dead_before = counter("chat_outbox_dead_total")
    retries_before = counter("chat_outbox_retries_total")
    async with running_relay(relay_settings(database_url, max_attempts=3)):
        [bad] = await insert([poisoned], exchange=f"{exchange_name}.missing")
        behind = await insert([poisoned])  # waits for the bad row while it is retried
        good = await insert([uuid.uuid4(), uuid.uuid4()])
        await observed.wait_for(3)

        async def dead() -> bool:
            return (await statuses(db_pool)).get("dead") == 1

        await eventually(dead)
    record = await row(db_pool, bad)
    assert record["retry_count"] == 3
    assert "missing" in record["last_error"]
    assert "NOT_FOUND" in record["last_error"] or "NotFound" in record["last_error"]
    # the dead row stopped blocking its session: the row behind it went out after it died
    assert sorted(observed.ids()) == sorted(good + behind)
    assert counter("chat_outbox_dead_total") - dead_before == 1
    assert counter("chat_outbox_retries_total") - retries_before == 2


async def test_a_nacked_row_is_retried_and_its_session_stays_in_order(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, broker: Broker
) -> None:
    """A queue that rejects every publish makes the broker nack the row; the rows behind it
    in its session are not sent while it is unconfirmed, and go out (once each) only after
    it has ended dead."""
    observed = await broker.observe("#")
    full = await broker.channel.declare_queue(
        exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    await full.bind(broker.exchange, "poison.#")
    session = uuid.uuid4()
    [nacked] = await insert([session], routing_key="poison.1")
    behind = await insert([session, session])
    async with running_relay(relay_settings(database_url, max_attempts=3)):

        async def settled() -> bool:
            return await statuses(db_pool) == {"dead": 1}

        await eventually(settled)
        await observed.wait_for_all(behind)
    record = await row(db_pool, nacked)
    assert record["retry_count"] == 3
    assert "nack" in record["last_error"].lower()
    # nothing behind the refused row overtook any of its attempts, and nothing went twice
    ids = [outbox_id(message) for message in observed.messages]
    assert ids.count(nacked) == 3  # the other queue got each attempt the full one refused
    assert ids.count(behind[0]) == ids.count(behind[1]) == 1
    last_attempt = max(i for i, seen in enumerate(ids) if seen == nacked)
    assert last_attempt < ids.index(behind[0]) < ids.index(behind[1])


async def test_a_row_that_closes_the_channel_is_found_and_innocent_rows_count_nothing(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed, broker: Broker
) -> None:
    """Publishing to an internal exchange passes the existence check but makes the broker
    close the channel; a careful round pins it on the right row."""
    internal = await broker.channel.declare_exchange(
        f"{broker.exchange.name}.internal",
        aio_pika.ExchangeType.TOPIC,
        internal=True,
        auto_delete=True,
    )
    await internal.bind(broker.exchange, "never")  # keeps it from being auto-deleted early
    innocent = [uuid.uuid4() for _ in range(20)]
    retries_before = counter("chat_outbox_retries_total")
    dead_before = counter("chat_outbox_dead_total")
    before = await insert(innocent)
    [bad] = await insert([uuid.uuid4()], exchange=internal.name)
    after = await insert(innocent)
    async with running_relay(relay_settings(database_url, max_attempts=2)):

        async def settled() -> bool:
            return await statuses(db_pool) == {"dead": 1}

        await eventually(settled)
        await observed.wait_for_all(before + after)
    record = await row(db_pool, bad)
    assert record["retry_count"] == 2
    assert "ACCESS_REFUSED" in record["last_error"] or "AccessRefused" in record["last_error"]
    # the bad row's one retry and its death are the only attempts counted
    assert counter("chat_outbox_retries_total") - retries_before == 1
    assert counter("chat_outbox_dead_total") - dead_before == 1
    for session, order in observed.per_session().items():
        deduplicated = list(dict.fromkeys(order))
        assert deduplicated == sorted(deduplicated), session
    await internal.delete()


async def test_a_round_whose_transaction_the_server_ended_counts_nothing(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, exchange_name: str
) -> None:
    """Three rows fail (their exchange is missing); while the round is in flight its session is
    ended by the server (what idle_in_transaction_session_timeout does to a relay paused past
    its lease). Its write-back fails and changes nothing: no retry, no dead row, no attempt
    counted; another relay can take the rows at once."""
    missing = f"{exchange_name}.missing"
    rows = await insert([uuid.uuid4(), uuid.uuid4(), uuid.uuid4()], exchange=missing, notify=False)
    await db_pool.execute(
        "UPDATE chat_message_outbox SET retry_count = 2 WHERE id = $1", rows[2]
    )  # its failure would make it dead (max_attempts 3)
    settings = relay_settings(database_url, max_attempts=3)

    async def end_the_round(claimed: Sequence[Claimed]) -> None:
        await db_pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = $1 AND state LIKE 'idle in transaction%'",
            f"outbox-relay {settings.instance_id}",
        )

    pool = await open_pool(settings)
    publisher = RabbitPublisher(settings.amqp_url, timeout=settings.publish_timeout_seconds)
    retries_before = counter("chat_outbox_retries_total")
    dead_before = counter("chat_outbox_dead_total")
    try:
        await publisher.connect()
        relay = Relay(settings, pool, Interposed(publisher, end_the_round))
        with pytest.raises(DatabaseUnavailable):  # translated by the pool
            await relay.step()
    finally:
        await publisher.close()
        await pool.close()
    assert counter("chat_outbox_retries_total") - retries_before == 0
    assert counter("chat_outbox_dead_total") - dead_before == 0
    after = await db_pool.fetch("SELECT id, retry_count FROM chat_message_outbox ORDER BY id")
    assert [(r["id"], r["retry_count"]) for r in after] == [
        (rows[0], 0),
        (rows[1], 0),
        (rows[2], 2),
    ]
    assert await held_rows(db_pool) == 0


def dead_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outbox_relay", "dead", *args],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_cli_lists_and_requeues_dead_rows(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert, observed: Observed, exchange_name: str
) -> None:
    first, second = await insert([uuid.uuid4(), uuid.uuid4()], notify=False)
    await bury_rows(db_pool, [first, second], error="NOT_FOUND - no exchange")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return dead_cli(database_url, *args)

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(first), str(second)]
    assert "retries=10" in lines[0]
    assert "NOT_FOUND - no exchange" in lines[0]
    async with running_relay(relay_settings(database_url, poll_interval_seconds=5.0)):
        requeued = cli("requeue", str(first))
        assert requeued.returncode == 0, requeued.stderr
        assert f"requeued 1 row(s): {first}" in requeued.stdout
        await observed.wait_for(1, within=4)  # woken by the CLI's NOTIFY, not the 5 s poll
        assert observed.ids() == [first]
        assert cli("requeue", str(first)).returncode == 1  # not dead any more
        assert "requeued 1 row(s)" in cli("requeue", "--all").stdout
        await observed.wait_for(2, within=4)
    assert observed.ids() == [first, second]
    assert "no dead rows" in cli("list").stdout
    assert await statuses(db_pool) == {}  # both published and gone


async def test_cli_list_stops_at_its_limit_and_counts_the_rest(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert
) -> None:
    ids = await insert([uuid.uuid4() for _ in range(150)], notify=False)
    await bury_rows(db_pool, ids)
    by_default = dead_cli(database_url, "list")
    assert by_default.returncode == 0, by_default.stderr
    *rows, rest = by_default.stdout.splitlines()
    assert [int(line.split("\t")[0]) for line in rows] == ids[:100]
    assert rest == "50 more dead row(s) not listed (--limit 100; 150 in all)"
    two = dead_cli(database_url, "list", "--limit", "2").stdout.splitlines()
    assert [int(line.split("\t")[0]) for line in two[:2]] == ids[:2]
    assert two[2:] == ["148 more dead row(s) not listed (--limit 2; 150 in all)"]
    refused = dead_cli(database_url, "list", "--limit", "0")
    assert refused.returncode == 2
    assert "must be at least 1" in refused.stderr
