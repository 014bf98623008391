"""Relays against the test database and the real RabbitMQ, observed through their own queues.

Each test gets its own topic exchange (the rows' ``exchange`` column names it) and an exclusive
queue bound to it with ``#``, so it never sees another suite's traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from chat_testing.waiting import eventually
from outbox_relay import repository
from outbox_relay.app import open_pool
from outbox_relay.publisher import Publisher, RabbitPublisher, Round
from outbox_relay.relay import Relay
from outbox_relay.repository import Claimed
from outbox_relay.settings import Settings

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass
class Observed:
    """What reached one queue bound to the test exchange."""

    messages: list[AbstractIncomingMessage] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    arrival: dict[int, float] = field(default_factory=dict)  # row id -> first arrival (monotonic)

    def ids(self) -> list[int]:
        return [outbox_id(m) for m in self.messages]

    def per_session(self) -> dict[str, list[int]]:
        order: dict[str, list[int]] = {}
        for message in self.messages:
            order.setdefault(str(message.headers["x-session-id"]), []).append(outbox_id(message))
        return order

    async def wait_for_all(self, ids: list[int], within: float = 60.0) -> None:
        async with asyncio.timeout(within):
            while not self.arrival.keys() >= set(ids):
                self.arrived.clear()
                await self.arrived.wait()

    async def wait_for(self, count: int, within: float = 20.0) -> None:
        async with asyncio.timeout(within):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()


def outbox_id(message: AbstractIncomingMessage) -> int:
    return int(str(message.message_id).removeprefix("outbox-"))


@dataclass
class Broker:
    """The test's own exchange, and queues bound to it."""

    channel: AbstractChannel
    exchange: AbstractExchange

    async def observe(self, *keys: str) -> Observed:
        seen = Observed()
        loop = asyncio.get_running_loop()
        queue = await self.channel.declare_queue(exclusive=True)
        for key in keys:
            await queue.bind(self.exchange, key)

        async def on_message(message: AbstractIncomingMessage) -> None:
            seen.messages.append(message)
            seen.arrival.setdefault(outbox_id(message), loop.time())
            seen.arrived.set()

        await queue.consume(on_message, no_ack=True)
        return seen


@pytest.fixture
def exchange_name() -> str:
    return f"test.outbox.{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def broker(exchange_name: str) -> AsyncIterator[Broker]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        yield Broker(channel, exchange)
        await exchange.delete()


@pytest.fixture
async def observed(broker: Broker) -> Observed:
    return await broker.observe("#")


Insert = Callable[..., Any]


@pytest.fixture
def insert(db_pool: asyncpg.Pool, exchange_name: str) -> Insert:
    """Commit outbox rows the way message-svc does (rows, then NOTIFY, one transaction)."""

    async def rows(
        sessions: list[uuid.UUID | None],
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
        headers: dict[str, Any] | None = None,
        notify: bool = True,
    ) -> list[int]:
        async with db_pool.acquire() as conn, conn.transaction():
            ids = [
                await conn.fetchval(
                    "INSERT INTO chat_message_outbox"
                    " (session_id, exchange, routing_key, event_type, headers, payload)"
                    " VALUES ($1, $2, $3, 'message', $4::jsonb, $5) RETURNING id",
                    session,
                    exchange or exchange_name,
                    routing_key or f"session.{session}",
                    json.dumps(
                        {"x-event": "message", "x-session-id": str(session), **(headers or {})}
                    ),
                    json.dumps({"n": i}).encode(),
                )
                for i, session in enumerate(sessions)
            ]
            if notify:
                await conn.execute("SELECT pg_notify('chat_outbox', '')")
        return ids

    return rows


async def statuses(pool: asyncpg.Pool) -> dict[str, int]:
    """What is left: rows waiting in the outbox, and dead rows (zero counts left out). A
    published row is gone."""
    waiting = await pool.fetchval("SELECT count(*) FROM chat_message_outbox")
    dead = await pool.fetchval("SELECT count(*) FROM chat_message_outbox_dead")
    return {k: int(v) for k, v in (("waiting", waiting), ("dead", dead)) if v}


async def held_rows(pool: asyncpg.Pool) -> int:
    """Outbox rows some transaction holds locked (a relay's round)."""
    async with pool.acquire() as conn, conn.transaction():
        total = await conn.fetchval("SELECT count(*) FROM chat_message_outbox")
        free = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM chat_message_outbox FOR UPDATE SKIP LOCKED) f"
        )
    return int(total) - int(free)


async def bury_rows(
    pool: asyncpg.Pool, ids: Sequence[int], *, retry_count: int = 10, error: str = "x"
) -> None:
    """Move rows to the dead table, as a relay does after their last attempt."""
    async with pool.acquire() as conn, conn.transaction():
        for row_id in ids:
            assert await repository.bury(conn, row_id, retry_count=retry_count, error=error)


@contextlib.asynccontextmanager
async def autovacuum_off(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Autovacuum kept off the outbox's partitions: it may cut a partition of dead rows down to
    no page at any moment, and the relay rightly leaves an empty partition alone, so a test of
    the TRUNCATE of a drained partition would see no TRUNCATE come."""
    partitions = [repository.PARTITION.format(slot=slot) for slot in range(repository.SLOTS)]
    for name in partitions:
        await pool.execute(f"ALTER TABLE {name} SET (autovacuum_enabled = false)")
    try:
        yield
    finally:
        for name in partitions:
            await pool.execute(f"ALTER TABLE {name} RESET (autovacuum_enabled)")


def relay_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "amqp_url": AMQP_URL,
        "poll_interval_seconds": 0.2,
        "publish_timeout_seconds": 3.0,
        "retry_base_seconds": 0.01,
        "retry_max_seconds": 0.05,
        "stats_interval_seconds": 0.2,
        "instance_id": f"test-{uuid.uuid4().hex[:6]}",
        **overrides,
    }
    return Settings(**values)


class Interposed:
    """The real RabbitMQ publisher; after each round's last confirm and before the relay
    writes the round back, ``meanwhile`` runs with the round's rows (what another relay or
    another transaction does at that moment)."""

    def __init__(
        self, inner: RabbitPublisher, meanwhile: Callable[[Sequence[Claimed]], Awaitable[None]]
    ) -> None:
        self.inner = inner
        self._meanwhile = meanwhile

    @property
    def connected(self) -> bool:
        return self.inner.connected

    async def connect(self) -> None:
        await self.inner.connect()

    async def publish(self, rows: Sequence[Claimed]) -> Round:
        result = await self.inner.publish(rows)
        await self._meanwhile(rows)
        return result

    async def close(self) -> None:
        await self.inner.close()


@contextlib.asynccontextmanager
async def running_relay(
    settings: Settings, wrap: Callable[[RabbitPublisher], Publisher] | None = None
) -> AsyncIterator[Relay]:
    """A started relay; stopped (again, if the test stopped it) on the way out."""
    pool = await open_pool(settings)
    publisher = RabbitPublisher(settings.amqp_url, timeout=settings.publish_timeout_seconds)
    relay = Relay(settings, pool, wrap(publisher) if wrap else publisher)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()
        await publisher.close()
        await pool.close()


async def until_listening(relay: Relay) -> None:
    await eventually(lambda: relay.listening, what="the relay LISTENs")


@dataclass
class RelayProcesses:
    """``python -m outbox_relay`` subprocesses; each is stopped by its own pid."""

    env: dict[str, str]
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, log: Path | None = None, **env: str) -> subprocess.Popen[bytes]:
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(log.open("wb")) if log else subprocess.DEVNULL
            process = subprocess.Popen(
                [sys.executable, "-m", "outbox_relay"],
                env={**self.env, **env},
                stdout=sink,
                stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)


@pytest.fixture
def relay_processes(database_url: str) -> Iterator[RelayProcesses]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AMQP_URL": AMQP_URL,
        "PORT": "0",
        "LOG_LEVEL": "WARNING",
    }
    processes = RelayProcesses(env)
    try:
        yield processes
    finally:
        processes.stop_all()
