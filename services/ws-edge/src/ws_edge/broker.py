"""The edge's side of RabbitMQ, as an interface with two implementations.

:class:`RabbitBroker`: one exclusive, auto-deleted queue per edge instance
(``ws-edge.{instance}``), bound to ``chat.events`` key by key as the edge asks; consumed with
manual acks and a prefetch window, so a burst waits in RabbitMQ rather than in this process.
A delivery is handed to every local subscriber's buffer before anything acknowledges it, and
the acks go in batches (:class:`Acks`: one ``basic.ack`` with ``multiple`` for up to
``ACK_BATCH`` handled deliveries, or ``ACK_DELAY_SECONDS`` after the first of them);
``/app/chat.send`` commands published to ``chat.commands`` (bound to the durable send queue)
typing events to ``chat.typing`` and presence events to ``chat.presence`` (both bound into
``chat.events``), all with publisher confirms; the edge's RabbitMQ user may publish nowhere
else (``chat_common.broker_access``), a delivery that came through ``chat.typing`` is fanned
out only if it is a typing event, one through ``chat.presence`` only if it is a presence event,
and a presence event only if it came through ``chat.presence`` (:func:`forged`).
The edge declares only its own queue: it waits at start until message-svc or the relay has
declared the shared exchanges. When the connection to RabbitMQ drops, the
queue and everything routed to it meanwhile is gone: the broker reports the loss (the edge
then closes its clients so that they reconnect and resume) and, once reconnected, re-binds
what the edge still needs. When tracing is configured, each delivered message is processed
inside a CONSUMER span (``chat.events process``), child of the ``traceparent`` its headers
carry (the relay's publish), so the edge's fan-out shows in the sender's trace.

:class:`MemoryBroker`: the same interface in memory for unit tests; several of them may share
one :class:`MemoryExchange`, which routes like RabbitMQ's topic exchange with sender-selected
distribution (one copy per queue, whichever of the keys matched).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
    AbstractRobustQueue,
)
from aio_pika.exceptions import ChannelNotFoundEntity

from chat_common import amqp, routing, tracing

log = logging.getLogger(__name__)
TRACER = tracing.tracer(__name__)

ACK_BATCH = 64  # deliveries per basic.ack at most (the prefetch must be larger)
ACK_DELAY_SECONDS = 0.005  # the longest a handled delivery waits for its ack
TOPOLOGY_WAIT_SECONDS = 60.0  # how long start() waits for the shared exchanges to exist

# (routing key, headers, body); called in delivery order and must not block.
Handler = Callable[[str, Mapping[str, Any], bytes], None]
Listener = Callable[[], None]


def _text(value: Any, default: str) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return default if value is None else str(value)


_ONLY_KIND = {routing.TYPING_EXCHANGE: "typing", routing.PRESENCE_EXCHANGE: "presence"}


def forged(exchange: str, kind: object) -> bool:
    """Whether a delivery came through an exchange the edges may publish to with another kind
    than that exchange carries, or is a presence event that came through another exchange."""
    if isinstance(kind, bytes | bytearray):
        kind = bytes(kind).decode("utf-8", "replace")
    expected = _ONLY_KIND.get(exchange)
    if expected is not None:
        return kind != expected
    return kind == "presence"


class Broker(Protocol):
    @property
    def connected(self) -> bool: ...

    async def bind(self, key: str) -> None: ...

    async def unbind(self, key: str) -> None: ...

    async def rebind(self, keys: Iterable[str]) -> None:
        """After a reconnect: bind ``keys`` again (the old queue went with the connection)."""
        ...

    async def publish_event(self, key: str, body: bytes, headers: dict[str, Any]) -> None: ...

    async def publish_send(self, body: bytes, headers: dict[str, Any]) -> None: ...

    async def publish_presence(self, key: str, body: bytes, headers: dict[str, Any]) -> None:
        """A presence event (``chat.presence``): routed by ``key`` and the ``CC`` header."""
        ...


class Acks:
    """Batched acknowledgements. :meth:`handled` is called for each delivery once it has been
    handed to its subscribers, in delivery order; one ``basic.ack`` with ``multiple`` then
    covers it and every earlier delivery of the channel, when ``batch`` are waiting or
    ``delay`` seconds after the first of them. Deliveries of a channel that closed meanwhile
    are not acknowledged (RabbitMQ requeues them, or dropped them with an exclusive queue)."""

    def __init__(self, batch: int = ACK_BATCH, delay: float = ACK_DELAY_SECONDS) -> None:
        self._batch = batch
        self._delay = delay
        self._last: AbstractIncomingMessage | None = None
        self._waiting = 0
        self._timer: asyncio.TimerHandle | None = None
        self._acking: set[asyncio.Task[None]] = set()
        self.sent = 0  # basic.ack frames sent

    def handled(self, message: AbstractIncomingMessage) -> None:
        if self._last is not None and message.channel is not self._last.channel:
            self._cancel()  # the earlier channel is gone with its deliveries
        self._last = message
        self._waiting += 1
        if self._waiting >= self._batch:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self.flush)

    def flush(self) -> None:
        last = self._last
        self._cancel()
        if last is None:
            return
        self.sent += 1
        task = asyncio.get_running_loop().create_task(_ack(last))
        self._acking.add(task)
        task.add_done_callback(self._acking.discard)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._last = None
        self._waiting = 0


async def _ack(message: AbstractIncomingMessage) -> None:
    with contextlib.suppress(Exception):  # a lost channel takes its deliveries with it
        await message.ack(multiple=True)


class RabbitBroker:
    def __init__(
        self,
        url: str,
        instance: str,
        *,
        send_queue: str = "chat.send",
        prefetch: int = 256,
        ack_batch: int = ACK_BATCH,
        ack_delay: float = ACK_DELAY_SECONDS,
        topology_wait: float = TOPOLOGY_WAIT_SECONDS,
    ) -> None:
        self._url = url
        self.queue_name = f"{routing.EDGE_QUEUE_PREFIX}{instance}"
        self._handler: Handler | None = None
        self._send_queue = send_queue
        self._prefetch = prefetch
        self._on_lost: Listener | None = None
        self._on_restored: Listener | None = None
        self._topology_wait = topology_wait
        self._connection: AbstractRobustConnection | None = None
        self._publish: AbstractChannel | None = None
        self._exchanges: amqp.EdgeExchanges | None = None
        self.forged = 0  # deliveries dropped: not typing events, yet sent through chat.typing
        self._queue: AbstractRobustQueue | None = None
        self._bound: set[str] = set()
        self._lock = asyncio.Lock()
        self._closing = False
        self._up = True
        self.acks = Acks(min(ack_batch, max(1, prefetch // 2)), ack_delay)

    @property
    def connected(self) -> bool:
        """Connected, with the channels, the queue and its consumer restored."""
        connection = self._connection
        return (
            connection is not None
            and connection.connected.is_set()
            and self._up
            and not self._closing
        )

    async def start(
        self,
        handler: Handler,
        *,
        on_lost: Listener | None = None,
        on_restored: Listener | None = None,
    ) -> None:
        """Connect and consume: each delivery goes to ``handler``; ``on_lost`` when the
        connection (and the queue with it) is lost, ``on_restored`` once it is back."""
        self._handler, self._on_lost, self._on_restored = handler, on_lost, on_restored
        self._connection = connection = await amqp.connect(self._url)
        connection.close_callbacks.add(self._lost)
        connection.reconnect_callbacks.add(self._restored)
        await self._wait_for_exchanges(connection)
        self._publish = await connection.channel(publisher_confirms=True)
        self._exchanges = await amqp.edge_exchanges(self._publish)
        consume = await connection.channel()
        await consume.set_qos(prefetch_count=self._prefetch)
        self._queue = await consume.declare_queue(self.queue_name, exclusive=True, auto_delete=True)
        await self._queue.consume(self._on_message, no_ack=False)

    async def _wait_for_exchanges(self, connection: AbstractRobustConnection) -> None:
        """Until message-svc or the relay has declared the shared exchanges (a failed passive
        declare closes its channel, so each try has a channel of its own)."""
        deadline = asyncio.get_running_loop().time() + self._topology_wait
        while True:
            channel = await connection.channel()
            try:
                await amqp.edge_exchanges(channel)
                return
            except ChannelNotFoundEntity as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                log.warning("waiting for message-svc to declare the exchanges: %s", exc)
            finally:
                if not channel.is_closed:
                    await channel.close()
            await asyncio.sleep(1.0)

    async def close(self, grace: float = 5.0) -> None:
        """Close the connection (RabbitMQ drops the exclusive queue and its bindings); give
        up waiting after ``grace`` seconds when the broker is unreachable."""
        self._closing = True
        if self._connection is not None:
            try:
                async with asyncio.timeout(grace):
                    await self._connection.close()
            except TimeoutError:
                log.warning("RabbitMQ did not answer the close in %.0f s", grace)

    def _lost(self, _sender: object, exc: BaseException | None = None) -> None:
        if self._closing or not self._up:
            return  # closing on purpose, or a failed reconnection attempt
        self._up = False
        log.warning("RabbitMQ connection lost (%s); the edge queue and its bindings are gone", exc)
        if self._on_lost is not None:
            self._on_lost()

    def _restored(self, _sender: object) -> None:
        self._up = True  # called once the channels, the queue and its consumer are back
        log.info("RabbitMQ connection restored")
        if self._on_restored is not None:
            self._on_restored()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if tracing.enabled():
            headers = message.headers or {}
            with tracing.processing(
                TRACER,
                headers,
                exchange=message.exchange or "",
                routing_key=message.routing_key or "",
                message_id=message.message_id,
                attributes={
                    tracing.MESSAGING_SUBSCRIPTION: self.queue_name,
                    tracing.MESSAGING_BODY_SIZE: len(message.body),
                    "chat.event": _text(headers.get(routing.EVENT_HEADER), "message"),
                },
            ):
                self._handle(message)
        else:
            self._handle(message)
        self.acks.handled(message)

    def _handle(self, message: AbstractIncomingMessage) -> None:
        assert self._handler is not None
        headers = message.headers or {}
        if forged(message.exchange or "", headers.get(routing.EVENT_HEADER)):
            # Anything with the edges' publish right can write to chat.typing and
            # chat.presence: only typing events come from the one, presence events from the
            # other and from nowhere else (a message or receipt only from chat.events).
            self.forged += 1
            log.warning(
                "dropped a %r event published to %s",
                headers.get(routing.EVENT_HEADER),
                message.exchange,
            )
            return
        try:
            self._handler(message.routing_key or "", message.headers or {}, message.body)
        except Exception as exc:
            tracing.fail_current(exc)
            log.exception("could not fan out an event (routing key %s)", message.routing_key)

    async def bind(self, key: str) -> None:
        assert self._queue is not None
        assert self._exchanges is not None
        async with self._lock:
            if key not in self._bound:
                await self._queue.bind(self._exchanges.events, key, robust=False)
                self._bound.add(key)

    async def unbind(self, key: str) -> None:
        assert self._queue is not None
        assert self._exchanges is not None
        async with self._lock:
            if key in self._bound:
                self._bound.discard(key)
                await self._queue.unbind(self._exchanges.events, key)

    async def rebind(self, keys: Iterable[str]) -> None:
        async with self._lock:
            self._bound.clear()
        for key in keys:
            await self.bind(key)

    async def publish_event(self, key: str, body: bytes, headers: dict[str, Any]) -> None:
        """An ephemeral event (typing): confirmed, but fine if nobody is bound to its key."""
        assert self._exchanges is not None
        await self._exchanges.typing.publish(
            aio_pika.Message(body, headers=headers, content_type="application/json"),
            key,
            mandatory=False,
        )

    async def publish_presence(self, key: str, body: bytes, headers: dict[str, Any]) -> None:
        """Confirmed; raises ``BrokerUnavailable``; fine if nobody is bound to the keys."""
        assert self._exchanges is not None
        with amqp.faults():
            await self._exchanges.presence.publish(
                aio_pika.Message(body, headers=headers, content_type="application/json"),
                key,
                mandatory=False,
            )

    async def publish_send(self, body: bytes, headers: dict[str, Any]) -> None:
        """A command for message-svc: persistent, confirmed, and an error if unroutable."""
        assert self._exchanges is not None
        await self._exchanges.commands.publish(
            aio_pika.Message(
                body,
                headers=headers,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            self._send_queue,
            mandatory=True,
        )


class MemoryExchange:
    """A topic exchange in memory: exact keys only (all the edge binds), CC honoured."""

    def __init__(self) -> None:
        self.brokers: list[MemoryBroker] = []
        self.published: list[tuple[str, dict[str, Any], bytes]] = []

    def publish(self, key: str, headers: Mapping[str, Any], body: bytes) -> None:
        self.published.append((key, dict(headers), body))
        keys = {key, *headers.get("CC", ())}
        for broker in self.brokers:
            if broker.handler is not None and keys & broker.bound:
                broker.handler(key, headers, body)  # one copy per queue


class MemoryBroker:
    def __init__(self, handler: Handler | None = None, exchange: MemoryExchange | None = None):
        self.handler = handler
        self.exchange = exchange or MemoryExchange()
        self.exchange.brokers.append(self)
        self.bound: set[str] = set()
        self.sends: list[tuple[bytes, dict[str, Any]]] = []
        self.binds: list[str] = []
        self.unbinds: list[str] = []
        self.up = True

    @property
    def connected(self) -> bool:
        return self.up

    async def bind(self, key: str) -> None:
        self.binds.append(key)
        self.bound.add(key)

    async def unbind(self, key: str) -> None:
        self.unbinds.append(key)
        self.bound.discard(key)

    async def rebind(self, keys: Iterable[str]) -> None:
        self.bound = set(keys)

    async def publish_event(self, key: str, body: bytes, headers: dict[str, Any]) -> None:
        self.exchange.publish(key, headers, body)

    async def publish_send(self, body: bytes, headers: dict[str, Any]) -> None:
        self.sends.append((body, headers))

    async def publish_presence(self, key: str, body: bytes, headers: dict[str, Any]) -> None:
        self.exchange.publish(key, headers, body)
