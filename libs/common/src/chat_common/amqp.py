"""RabbitMQ helpers (aio-pika): a robust connection and the topology every service relies on.

Declarations are idempotent, so each service declares what it uses at start.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, AbstractRobustConnection

from . import routing


async def connect(url: str) -> AbstractRobustConnection:
    return await aio_pika.connect_robust(url, client_properties={"connection_name": "chat"})


async def events_exchange(channel: AbstractChannel) -> AbstractExchange:
    """The durable topic exchange that carries every chat event."""
    return await channel.declare_exchange(
        routing.EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )


async def send_queue(
    channel: AbstractChannel, delivery_limit: int = 20, name: str = routing.SEND_QUEUE
) -> AbstractQueue:
    """The durable ``chat.send`` queue (quorum: a message redelivered ``delivery_limit`` times
    goes to the dead-letter queue) and its dead-letter exchange and queue."""
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
    return await channel.declare_queue(name, durable=True, arguments=arguments)
