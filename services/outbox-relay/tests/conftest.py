"""A relay against the test database and the real RabbitMQ, observed through its own queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from chat_common import amqp
from outbox_relay.publisher import Publisher
from outbox_relay.relay import Relay
from outbox_relay.settings import Settings

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass
class Observed:
    """What reached a queue bound to the test exchange with '#'."""

    messages: list[AbstractIncomingMessage] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def ids(self) -> list[int]:
        return [int(str(m.message_id).removeprefix("outbox-")) for m in self.messages]

    async def wait_for_all(self, ids: list[int], within: float = 60.0) -> None:
        wanted = set(ids)
        async with asyncio.timeout(within):
            while not wanted <= set(self.ids()):
                self.arrived.clear()
                await self.arrived.wait()

    async def wait_for(self, count: int, within: float = 20.0) -> None:
        async with asyncio.timeout(within):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
def exchange_name() -> str:
    return f"test.outbox.{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def observed(exchange_name: str) -> AsyncIterator[Observed]:
    connection = await aio_pika.connect(AMQP_URL)
    seen = Observed()
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "#")

        async def on_message(message: AbstractIncomingMessage) -> None:
            seen.messages.append(message)
            seen.arrived.set()

        await queue.consume(on_message, no_ack=True)
        yield seen
        await exchange.delete()


Insert = Callable[..., Any]


@pytest.fixture
def insert(db_pool: asyncpg.Pool, exchange_name: str) -> Insert:
    async def rows(
        sessions: list[uuid.UUID | None], *, exchange: str | None = None, notify: bool = True
    ) -> list[int]:
        async with db_pool.acquire() as conn, conn.transaction():
            ids = [
                await conn.fetchval(
                    "INSERT INTO chat_message_outbox"
                    " (session_id, exchange, routing_key, event_type, headers, payload)"
                    " VALUES ($1, $2, $3, 'message', $4::jsonb, $5) RETURNING id",
                    session,
                    exchange or exchange_name,
                    f"session.{session}",
                    json.dumps({"x-event": "message", "x-session-id": str(session)}),
                    json.dumps({"n": i}).encode(),
                )
                for i, session in enumerate(sessions)
            ]
            if notify:
                await conn.execute("SELECT pg_notify('chat_outbox', '')")
        return ids

    return rows


def relay_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "amqp_url": AMQP_URL,
        "poll_interval_seconds": 0.2,
        "retry_base_seconds": 0.01,
        "retry_max_seconds": 0.05,
        "stats_interval_seconds": 0.2,
        **overrides,
    }
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_relay(settings: Settings) -> AsyncIterator[Relay]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    assert pool is not None
    connection: AbstractRobustConnection = await amqp.connect(settings.amqp_url)

    async def channel() -> aio_pika.abc.AbstractChannel:
        return await connection.channel(publisher_confirms=True)

    relay = Relay(settings, pool, Publisher(channel))
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()
        await connection.close()
        await pool.close()
