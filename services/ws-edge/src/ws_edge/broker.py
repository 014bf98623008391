"""The edge's side of RabbitMQ, as an interface with two implementations: RabbitMQ (one queue
per edge instance, bound key by key) and in memory (for unit tests).

Typed disconnect of the consumer is handled by aio-pika's robust connection, which re-declares
the queue and its bindings after a reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from chat_common import amqp, routing

# (routing key, headers, body)
Handler = Callable[[str, Mapping[str, Any], bytes], Awaitable[None]]


class Broker(Protocol):
    async def bind(self, key: str) -> None: ...

    async def unbind(self, key: str) -> None: ...

    async def publish_event(self, key: str, body: bytes, headers: dict[str, Any]) -> None: ...

    async def publish_send(self, body: bytes, headers: dict[str, Any]) -> None: ...


class RabbitBroker:
    def __init__(self, url: str, instance: str, handler: Handler) -> None:
        self._url = url
        self._instance = instance
        self._handler = handler
        self._connection: AbstractRobustConnection | None = None
        self._publish: AbstractChannel | None = None
        self._events: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None
        self._bound: set[str] = set()
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def start(self) -> None:
        self._connection = await amqp.connect(self._url)
        self._publish = await self._connection.channel(publisher_confirms=True)
        self._events = await amqp.events_exchange(self._publish)
        await amqp.send_queue(self._publish)
        consume = await self._connection.channel()
        await consume.set_qos(prefetch_count=512)
        self._queue = await consume.declare_queue(
            f"ws-edge.{self._instance}", exclusive=True, auto_delete=True
        )
        await self._queue.consume(self._on_message, no_ack=True)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        await self._handler(message.routing_key or "", message.headers or {}, message.body)

    async def bind(self, key: str) -> None:
        assert self._queue is not None
        assert self._events is not None
        async with self._lock:
            if key not in self._bound:
                await self._queue.bind(self._events, key)
                self._bound.add(key)

    async def unbind(self, key: str) -> None:
        assert self._queue is not None
        assert self._events is not None
        async with self._lock:
            if key in self._bound:
                self._bound.discard(key)
                await self._queue.unbind(self._events, key)

    async def publish_event(self, key: str, body: bytes, headers: dict[str, Any]) -> None:
        assert self._events is not None
        await self._events.publish(
            aio_pika.Message(body, headers=headers, content_type="application/json"), key
        )

    async def publish_send(self, body: bytes, headers: dict[str, Any]) -> None:
        assert self._publish is not None
        await self._publish.default_exchange.publish(
            aio_pika.Message(
                body,
                headers=headers,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing.SEND_QUEUE,
        )


class MemoryBroker:
    """Delivers published events to its own handler when their key (or a CC key) is bound."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler
        self.bound: set[str] = set()
        self.sends: list[tuple[bytes, dict[str, Any]]] = []

    async def bind(self, key: str) -> None:
        self.bound.add(key)

    async def unbind(self, key: str) -> None:
        self.bound.discard(key)

    async def publish_event(self, key: str, body: bytes, headers: dict[str, Any]) -> None:
        keys = [key, *headers.get("CC", [])]
        if self.handler is not None and any(k in self.bound for k in keys):
            await self.handler(key, headers, body)

    async def publish_send(self, body: bytes, headers: dict[str, Any]) -> None:
        self.sends.append((body, headers))
