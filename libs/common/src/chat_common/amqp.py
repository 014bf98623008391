"""RabbitMQ helpers (aio-pika): a robust connection and the topology every service relies on.

Who declares what follows who may (``chat_common.broker_access``): the outbox relay and
message-svc declare the event exchanges (:func:`events_exchange`), message-svc also the
commands exchange and the send queue (:func:`commands_exchange`, :func:`send_queue`), each edge
only its own queue: it checks the shared exchanges passively (:func:`edge_exchanges`).
Declarations are idempotent.

The broker adapter's faults: :data:`FAULTS` is what a lost broker, connection or channel looks
like from aio-pika/aiormq; :func:`faults` reports them as
:class:`~chat_common.errors.BrokerUnavailable`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any, NamedTuple

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, AbstractRobustConnection

from . import routing
from .errors import BrokerUnavailable

FAULTS: tuple[type[BaseException], ...] = (
    TimeoutError,
    OSError,  # refused, reset (aiormq's connection errors are ConnectionErrors too)
    aiormq.exceptions.AMQPError,  # connection or channel closed by the broker, nacks
    aiormq.exceptions.ChannelInvalidStateError,  # an operation on a closed channel
)


def is_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is how aio-pika and aiormq report a lost broker, connection or channel.

    Besides :data:`FAULTS`: aiormq raises a bare ``RuntimeError("<Connection ...> closed")``
    for an operation on a connection already closed (a class of its own would be better; the
    test of this adapter pins the message, so a change in aiormq fails it)."""
    if isinstance(exc, FAULTS):
        return True
    return type(exc) is RuntimeError and str(exc).endswith(" closed")


def unavailable(exc: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(f"RabbitMQ: {type(exc).__name__}: {exc}".rstrip(": "))


@contextlib.contextmanager
def faults() -> Generator[None]:
    """Report aio-pika's and aiormq's faults raised inside as :class:`BrokerUnavailable`."""
    try:
        yield
    except Exception as exc:
        if is_fault(exc):
            raise unavailable(exc) from exc
        raise


async def connect(url: str) -> AbstractRobustConnection:
    return await aio_pika.connect_robust(url, client_properties={"connection_name": "chat"})


async def events_exchange(channel: AbstractChannel) -> AbstractExchange:
    """The durable topic exchange that carries every chat event, and the typing and presence
    exchanges bound into it for every key (declared with it, so typing and presence work
    wherever events do)."""
    events = await channel.declare_exchange(
        routing.EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    typing = await channel.declare_exchange(
        routing.TYPING_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await events.bind(typing, "#")  # source: chat.typing, destination: chat.events
    presence = await channel.declare_exchange(
        routing.PRESENCE_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await events.bind(presence, "#")
    return events


async def send_queue(
    channel: AbstractChannel, delivery_limit: int = 20, name: str = routing.SEND_QUEUE
) -> AbstractQueue:
    """The durable ``chat.send`` queue (quorum: a message redelivered ``delivery_limit`` times
    goes to the dead-letter queue), its dead-letter exchange and queue, and its binding to the
    commands exchange under its own name (where the edges publish)."""
    dlx = await channel.declare_exchange(
        routing.SEND_DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead = await channel.declare_queue(
        routing.SEND_DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dlx)
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": routing.SEND_DEAD_LETTER_EXCHANGE,
        "x-delivery-limit": delivery_limit,
    }
    queue = await channel.declare_queue(name, durable=True, arguments=arguments)
    await queue.bind(await commands_exchange(channel), name)
    return queue


async def commands_exchange(channel: AbstractChannel) -> AbstractExchange:
    """The durable direct exchange the edges publish queued sends to."""
    return await channel.declare_exchange(
        routing.COMMANDS_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
    )


class EdgeExchanges(NamedTuple):
    events: AbstractExchange
    typing: AbstractExchange
    commands: AbstractExchange
    presence: AbstractExchange


async def edge_exchanges(channel: AbstractChannel) -> EdgeExchanges:
    """The exchanges an edge uses, declared passively (it may not configure them): raises
    ``aio_pika.exceptions.ChannelNotFoundEntity`` (and the channel closes) while one is
    missing, that is until message-svc or the relay has declared them."""
    found = [
        await channel.declare_exchange(name, passive=True)
        for name in (
            routing.EVENTS_EXCHANGE,
            routing.TYPING_EXCHANGE,
            routing.COMMANDS_EXCHANGE,
            routing.PRESENCE_EXCHANGE,
        )
    ]
    return EdgeExchanges(*found)
