"""Publishing claimed rows to RabbitMQ with publisher confirms, in per-session order.

Rows of one session go out one after another (each confirmed before the next is sent); the
sessions of a batch go out side by side. When a row fails, the later rows of its session in the
batch are not sent. A failure of the row itself (nack, unknown exchange) counts an attempt; a
lost connection does not (the rows are released and wait for the broker).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange

from .repository import Claimed


class BrokerUnavailable(Exception):
    """The connection or channel to RabbitMQ is gone; nothing is the rows' fault."""


@dataclass
class BatchResult:
    published: list[Claimed] = field(default_factory=list)
    failed: list[tuple[Claimed, str]] = field(default_factory=list)
    skipped: list[Claimed] = field(default_factory=list)  # not sent: to release
    confirm_seconds: list[tuple[Claimed, float]] = field(default_factory=list)
    broker_down: bool = False


ROW_FAULTS: tuple[type[BaseException], ...] = (
    aio_pika.exceptions.DeliveryError,  # nacked or returned
    aiormq.exceptions.ChannelNotFoundEntity,  # no such exchange
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelPreconditionFailed,
)


class Publisher:
    def __init__(self, channel_factory: Callable[[], Awaitable[AbstractChannel]]) -> None:
        self._channel_factory = channel_factory
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    async def _exchange(self, name: str) -> AbstractExchange:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._channel_factory()
            self._exchanges.clear()
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self._channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def publish(self, rows: list[Claimed]) -> BatchResult:
        by_session: dict[uuid.UUID | int, list[Claimed]] = {}
        for row in rows:  # rows arrive sorted by id
            by_session.setdefault(row.session_id or row.id, []).append(row)
        result = BatchResult()
        outcomes = await asyncio.gather(
            *(self._publish_in_order(chain, result) for chain in by_session.values()),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BrokerUnavailable):
                result.broker_down = True
            elif isinstance(outcome, BaseException):
                raise outcome
        return result

    async def _publish_in_order(self, chain: list[Claimed], result: BatchResult) -> None:
        for index, row in enumerate(chain):
            started = time.perf_counter()
            try:
                exchange = await self._exchange(row.exchange)
                await exchange.publish(_message(row), routing_key=row.routing_key)
            except ROW_FAULTS as exc:
                self._channel = None if _channel_broken(exc) else self._channel
                result.failed.append((row, f"{type(exc).__name__}: {exc}"))
                result.skipped.extend(chain[index + 1 :])
                return
            except (aio_pika.exceptions.AMQPError, ConnectionError, OSError, RuntimeError) as exc:
                self._channel = None
                result.skipped.extend(chain[index:])
                raise BrokerUnavailable(str(exc)) from exc
            result.published.append(row)
            result.confirm_seconds.append((row, time.perf_counter() - started))


def _channel_broken(exc: BaseException) -> bool:
    return isinstance(exc, aiormq.exceptions.ChannelClosed)


def _message(row: Claimed) -> aio_pika.Message:
    headers: dict[str, Any] = dict(row.headers)
    return aio_pika.Message(
        row.payload,
        headers=headers,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=f"outbox-{row.id}",
    )
