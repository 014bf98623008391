"""Publishing a claimed batch to RabbitMQ with publisher confirms.

Exceptions: :class:`chat_common.errors.BrokerUnavailable` when there is no usable connection
to RabbitMQ (no row is at fault); aio-pika's faults are recognised by
``chat_common.amqp`` (``faults``, ``is_fault``), the broker adapter's one rule.

A publish round, :meth:`RabbitPublisher.publish`:

1. Every exchange the batch names is checked once (a passive declare on a probe channel) and
   remembered. A row naming a missing exchange fails without being sent, and the later rows of
   its session are not sent either.
2. The other rows go out on one channel in confirm mode, in waves: the first row of every
   session, pipelined (every frame written before the first confirm is awaited), then, once
   the broker confirmed them, the second row of every session whose first was confirmed, and
   so on. A row is never sent while an earlier row of its session is unconfirmed, so a
   refused (nacked) row cannot be overtaken by the rows behind it. A wave holds at most one
   row of a session, so the order in which its frames reach the socket does not matter: the
   per-session order rests on the waves alone, not on how the client library schedules
   writes.
3. Each row gets an :class:`~outbox_relay.batch.Outcome`; :func:`outbox_relay.batch.settle`
   decides what is written back.

Events go out with ``mandatory=False``: an event that no queue is bound for means that no
client of that session or user is connected, and clients catch up from history by ``seq``.
The ``CC`` header (a list of extra routing keys, RabbitMQ's sender-selected distribution) is
sent as an AMQP array, so the message also reaches the queues bound to those keys.

When the broker closes the channel (it refused one publish: an internal exchange, an exchange
deleted after the check...), nothing says which publish did it: every unconfirmed row of the
round is ``UNKNOWN`` (released, no attempt counted) and the next round is *careful*: one row at
a time, each confirmed before the next is sent, so that the fault lands on its own row.

Tracing: when tracing is configured, each publish of a row is a PRODUCER span
(``{exchange} publish``), child of the ``traceparent`` the row's headers carry (the send that
wrote it), and the message goes out with the span's own ``traceparent`` instead, so that the
consumers' spans hang under the publish. The span starts when the frame is queued and ends
when the broker's confirm (or nack, or the round's timeout) settles the publish: it measures
what the relay waits for. Without tracing nothing of this runs (one check per round).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from opentelemetry.trace import Span

from chat_common import amqp, routing, tracing
from chat_common.errors import BrokerUnavailable

from .batch import CONFIRMED, Outcome, Verdict, failed, session_key, unknown, waves
from .repository import Claimed

TRACER = tracing.tracer(__name__)


@dataclass(slots=True)
class Round:
    """The result of one publish round."""

    outcomes: dict[int, Outcome] = field(default_factory=dict)
    confirmed_at: dict[int, float] = field(default_factory=dict)  # time.monotonic()
    broker_lost: bool = False


class Publisher(Protocol):
    """What the relay needs from a broker; RabbitMQ here, in memory in tests."""

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> None:
        """Open the connection if it is not open; :class:`BrokerUnavailable` if it fails."""

    async def publish(self, rows: Sequence[Claimed]) -> Round: ...

    async def close(self) -> None: ...


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _message_id(row: Claimed) -> str:
    return f"outbox-{row.id}"


def _properties(row: Claimed, headers: dict[str, Any]) -> aiormq.spec.Basic.Properties:
    return aiormq.spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,  # persistent
        headers=headers,  # a list value (CC) goes out as an AMQP field array
        message_id=_message_id(row),
        message_type=row.event_type,
    )


def _publish_span(row: Claimed, headers: dict[str, Any]) -> Span:
    """The PRODUCER span of one publish; its traceparent replaces the row's in ``headers``."""
    return tracing.start_publish(
        TRACER,
        headers,
        exchange=row.exchange,
        routing_key=row.routing_key,
        message_id=_message_id(row),
        attributes={
            tracing.MESSAGING_BODY_SIZE: len(row.payload),
            "chat.outbox.id": row.id,
            "chat.outbox.attempt": row.retry_count + 1,
        },
    )


def _outcome(task: asyncio.Task[Any]) -> Outcome:
    if task.cancelled():
        return unknown("no confirm in time")
    exc = task.exception()
    if exc is None:
        return CONFIRMED
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return failed(f"nacked by the broker: {_describe(exc)}")
    if amqp.is_fault(exc):
        return unknown(_describe(exc))
    return failed(_describe(exc))  # the row cannot be sent at all (headers it cannot encode...)


class RabbitPublisher:
    def __init__(self, url: str, *, timeout: float, name: str = "outbox-relay") -> None:
        self._url = url
        self._timeout = timeout
        self._name = name
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None  # confirm mode, for the rows
        self._probe: AbstractChannel | None = None  # passive declares (a 404 closes it)
        self._known: set[str] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._traced = False  # tracing configured: read once per round
        self.careful = False

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def connect(self) -> None:
        if self.connected:
            return
        self._abandon()
        with amqp.faults():  # BrokerUnavailable
            async with asyncio.timeout(self._timeout):
                connection = await aio_pika.connect(
                    self._url, client_properties={"connection_name": self._name}
                )
                try:
                    setup = await connection.channel()
                    await amqp.events_exchange(setup)  # the exchange rows name by default
                    await setup.close()
                except BaseException:
                    await connection.close()
                    raise
        self._connection = connection
        self._known = {"", routing.EVENTS_EXCHANGE}  # "": the default exchange always exists

    async def close(self) -> None:
        connection = self._detach()
        if connection is not None:
            await _close_quietly(connection)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _detach(self) -> AbstractConnection | None:
        connection, self._connection = self._connection, None
        self._channel = self._probe = None
        return connection

    def _abandon(self) -> None:
        """Drop a broken connection at once; it closes in the background (a stalled broker
        would make a polite close wait, and the rows must be released now)."""
        connection = self._detach()
        if connection is not None:
            task = asyncio.get_running_loop().create_task(_close_quietly(connection))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def publish(self, rows: Sequence[Claimed]) -> Round:
        """One round, within the publish timeout from start to the last confirm."""
        result = Round()
        if self._connection is None or not self.connected:
            result.broker_lost = True
            return result
        connection = self._connection
        self._traced = tracing.enabled()
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            with amqp.faults():
                async with asyncio.timeout_at(deadline):
                    missing = await self._missing(connection, {row.exchange for row in rows})
                    await self._confirm_channel(connection)
        except BrokerUnavailable:
            result.broker_lost = True
            self._abandon()
            return result
        to_send: list[Claimed] = []
        stopped: set[object] = set()
        for row in sorted(rows, key=lambda r: r.id):
            key = session_key(row)
            if key in stopped:
                continue
            problem = _unsendable(row, missing)
            if problem:
                result.outcomes[row.id] = failed(problem)
                stopped.add(key)
            else:
                to_send.append(row)
        if self.careful:
            await self._one_by_one(connection, to_send, result, deadline)
        else:
            await self._pipelined(connection, to_send, result, deadline)
        if result.broker_lost or connection.is_closed:
            result.broker_lost = True
            self._abandon()
        return result

    async def _confirm_channel(self, connection: AbstractConnection) -> aiormq.abc.AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await connection.channel(publisher_confirms=True)
        return await self._channel.get_underlay_channel()

    async def _drop_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await channel.close()

    async def _missing(self, connection: AbstractConnection, names: set[str]) -> dict[str, str]:
        """The exchanges among ``names`` that cannot be published to, with the reason."""
        missing: dict[str, str] = {}
        for name in sorted(names - self._known):
            if self._probe is None or self._probe.is_closed:
                self._probe = await connection.channel(publisher_confirms=False)
            try:
                await self._probe.declare_exchange(name, passive=True)
            except aiormq.exceptions.ChannelClosed as exc:  # 404 NOT_FOUND, 403...
                if connection.is_closed:
                    raise
                missing[name] = f"exchange {name!r}: {_describe(exc)}"
                self._probe = None  # the broker closed it
                continue
            self._known.add(name)
        return missing

    def _start(
        self, channel: aiormq.abc.AbstractChannel, row: Claimed, result: Round
    ) -> asyncio.Task[Any]:
        if not isinstance(channel, aiormq.Channel):  # pragma: no cover - aio-pika gives one
            raise TypeError(f"expected an aiormq channel, got {type(channel).__name__}")
        headers = dict(row.headers)
        # Synchronous, like the rest of this method: the tasks still reach the channel's write
        # lock in id order.
        span = _publish_span(row, headers) if self._traced else None
        # wait=False: the frame is queued for the socket without waiting for it to be flushed,
        # so the next publish follows at once; the confirm is still awaited.
        task = asyncio.get_running_loop().create_task(
            channel.basic_publish(
                row.payload,
                exchange=row.exchange,
                routing_key=row.routing_key,
                properties=_properties(row, headers),
                mandatory=False,
                wait=False,
            )
        )
        stamps = result.confirmed_at
        if span is None:
            task.add_done_callback(lambda _: stamps.__setitem__(row.id, time.monotonic()))
        else:

            def settled(done: asyncio.Task[Any]) -> None:
                stamps[row.id] = time.monotonic()
                # The span ends with the confirm (or the nack, the lost channel, the timeout).
                outcome = _outcome(done)
                tracing.end(span, None if outcome is CONFIRMED else outcome.error)

            task.add_done_callback(settled)
        return task

    async def _until(self, tasks: list[asyncio.Task[Any]], deadline: float) -> bool:
        """Wait for the tasks until the deadline; cancel the late ones. True if all were on
        time."""
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return not pending

    async def _pipelined(
        self, connection: AbstractConnection, rows: list[Claimed], result: Round, deadline: float
    ) -> None:
        """The rows in waves (:func:`~outbox_relay.batch.waves`): the rows of a wave, one per
        session, are pipelined; the next wave goes once the broker has confirmed this one, and
        carries only sessions whose rows so far were all confirmed. Rows never sent stay
        ``NOT_SENT`` (released)."""
        if not rows:
            return
        channel = await self._confirm_channel(connection)  # open: checked in publish()
        stopped: set[object] = set()
        on_time = True
        for wave in waves(rows):
            going = [row for row in wave if session_key(row) not in stopped]
            if not going:
                continue
            # One row per session: the order the frames go out in does not matter.
            tasks = [self._start(channel, row, result) for row in going]
            on_time = await self._until(tasks, deadline)
            for row, task in zip(going, tasks, strict=True):
                outcome = _outcome(task)
                result.outcomes[row.id] = outcome
                if outcome.verdict is not Verdict.CONFIRMED:
                    stopped.add(session_key(row))
            if not on_time or connection.is_closed or channel.is_closed:
                break
        if not on_time:
            result.broker_lost = True  # a broker that does not confirm in time is unwell
        elif not connection.is_closed and any(
            o.verdict is Verdict.UNKNOWN for o in result.outcomes.values()
        ):
            # The broker closed the channel over a publish it refused: the next round finds
            # the culprit one row at a time.
            self.careful = True
            self._known = {""}  # the exchange may be gone: check again
            await self._drop_channel()

    async def _one_by_one(
        self, connection: AbstractConnection, rows: list[Claimed], result: Round, deadline: float
    ) -> None:
        """The careful round: each row confirmed before the next is sent. New rows are started
        during the first half of the round's time only; the rest stay unsent (released), and
        the next round is careful again."""
        loop = asyncio.get_running_loop()
        stop_starting = (loop.time() + deadline) / 2
        stopped: set[object] = set()
        for row in rows:
            key = session_key(row)
            if key in stopped:
                continue
            if loop.time() >= stop_starting:
                return
            try:
                with amqp.faults():
                    async with asyncio.timeout_at(deadline):
                        channel = await self._confirm_channel(connection)
            except BrokerUnavailable:
                result.broker_lost = True
                return
            task = self._start(channel, row, result)
            on_time = await self._until([task], deadline)
            outcome = _outcome(task)
            if outcome.verdict is Verdict.UNKNOWN:
                if not on_time or connection.is_closed:
                    result.outcomes[row.id] = outcome
                    result.broker_lost = True
                    return
                # alone in flight on a channel the broker closed: its own fault
                outcome = failed(outcome.error)
                self._known = {""}
                await self._drop_channel()
            result.outcomes[row.id] = outcome
            if outcome.verdict is not Verdict.CONFIRMED:
                stopped.add(key)
        self.careful = False


async def _close_quietly(connection: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            await connection.close()


def _unsendable(row: Claimed, missing: dict[str, str]) -> str | None:
    if row.exchange in missing:
        return missing[row.exchange]
    if len(row.routing_key.encode()) > 255:
        return "routing key longer than 255 bytes"
    return None
