"""RabbitMQ helpers (aio-pika): a robust connection and the topology every service relies on.

Who declares what follows who may (``chat_common.broker_access``): the outbox relay and
message-svc declare the event exchanges (:func:`events_exchange`), message-svc also the
commands exchange and the send queue (:func:`commands_exchange`, :func:`send_queue`), each edge
only its own queue: it checks the shared exchanges passively (:func:`edge_exchanges`).
Declarations are idempotent.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, AbstractRobustConnection

from . import routing


async def connect(url: str) -> AbstractRobustConnection:
    return await aio_pika.connect_robust(url, client_properties={"connection_name": "chat"})


async def events_exchange(channel: AbstractChannel) -> AbstractExchange:
    """The durable topic exchange that carries every chat event, and the typing exchange
    bound into it for every key (declared with it, so typing works wherever events do)."""
    events = await channel.declare_exchange(
        routing.EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    typing = await channel.declare_exchange(
        routing.TYPING_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await events.bind(typing, "#")  # source: chat.typing, destination: chat.events
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
        )
    ]
    return EdgeExchanges(*found)
