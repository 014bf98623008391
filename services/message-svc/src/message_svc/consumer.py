"""Consumer of ``chat.send``: messages the WebSocket edge received on ``/app/chat.send``.

Same rules and code path as the REST send. Manual acks, only after the outcome is settled:
- stored (or a replay): the stored message goes to the sender's user key as an ``ack`` event
  (the edge answers the client's RECEIPT and ``/user/queue/ack``), then the delivery is acked;
- refused for good (invalid, not a participant, rate limited...): an ``error`` event for
  ``/user/queue/error``, then acked;
- failed in a way that may pass (database, broker or the rate-limit store down: any
  :class:`DependencyError` among them): retried in place with backoff, unacked, until it goes
  through or the process stops (then RabbitMQ redelivers it);
- anything else (a bug, undecodable bytes): rejected; the quorum queue's delivery limit moves
  a message that keeps failing to the dead-letter queue.
A command carries its sender's own token (the one the edge verified): a command whose token is
missing, expired or invalid is refused with an ``error`` event like any other refusal (the
client sends it again, with a fresh token); one whose token names someone else than ``user``
is forged and goes straight to the dead-letter queue. So the right to publish to the queue is
not the right to send as anyone.
Messages of one user are processed in order (one worker per user hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib

import aio_pika
import msgspec
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue
from opentelemetry.trace import SpanKind
from prometheus_client import Counter

from chat_common import amqp, routing, tracing
from chat_common.dto import ErrorEvent, MessageView, SendCommand, SendMessageRequest
from chat_common.errors import AuthenticationFailed, BrokerUnavailable, ChatError, DependencyError
from chat_common.identity import normalise_email
from chat_common.jwt_verify import UserTokenVerifier

from .service import MessageService

log = logging.getLogger(__name__)

TRACER = tracing.tracer(__name__)
OUTCOMES = Counter("chat_ws_sends_total", "chat.send messages handled", ["outcome"])


class SendConsumer:
    def __init__(
        self,
        queue: AbstractQueue,
        exchange: AbstractExchange,
        service: MessageService,
        users: UserTokenVerifier,
        *,
        workers: int = 8,
        max_backoff: float = 5.0,
    ) -> None:
        self._queue = queue
        self._exchange = exchange
        self._service = service
        self._users = users
        self._inboxes: list[asyncio.Queue[AbstractIncomingMessage]] = [
            asyncio.Queue() for _ in range(workers)
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._tag: str | None = None
        self._max_backoff = max_backoff

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(inbox)) for inbox in self._inboxes]
        self._tag = await self._queue.consume(self._dispatch, no_ack=False)

    async def stop(self) -> None:
        """Stop taking messages; what is unacked goes back to the queue for another instance."""
        if self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _dispatch(self, message: AbstractIncomingMessage) -> None:
        user = message.headers.get("x-user")
        key = str(user).encode() if user is not None else (message.body or b"")[:64]
        await self._inboxes[zlib.crc32(key) % len(self._inboxes)].put(message)

    async def _work(self, inbox: asyncio.Queue[AbstractIncomingMessage]) -> None:
        while True:
            message = await inbox.get()
            try:
                await self.handle(message)
            except asyncio.CancelledError:
                raise
            except BrokerUnavailable as exc:  # the reply could not be published
                log.warning("chat.send reply not published (%s); the send comes again", exc)
                OUTCOMES.labels("rejected").inc()
                with contextlib.suppress(BrokerUnavailable), amqp.faults():
                    await message.reject(requeue=True)
            except Exception:
                log.exception("chat.send message failed; rejecting it")
                OUTCOMES.labels("rejected").inc()
                with contextlib.suppress(Exception):
                    await message.reject(requeue=True)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        with TRACER.start_as_current_span(
            "chat.send process",
            context=tracing.extract(message.headers),
            kind=SpanKind.CONSUMER,
        ):
            await self._handle(message)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            command = msgspec.json.decode(message.body, type=SendCommand)
            user = normalise_email(command.user, field="user")
        except (msgspec.DecodeError, msgspec.ValidationError, ChatError):
            log.warning("undecodable chat.send message; dead-lettering it")
            OUTCOMES.labels("poison").inc()
            await message.reject(requeue=False)
            return
        request = SendMessageRequest(
            session_id=command.session_id,
            content=command.content,
            client_message_id=command.client_message_id,
            encrypted=command.encrypted,
        )
        delay = 0.05
        while True:
            try:
                if not command.token:
                    raise AuthenticationFailed("the send carries no token", code="TOKEN_MISSING")
                sender = await self._users.identify(command.token)
                if sender.email != user:
                    log.warning("chat.send command for %s with another user's token", user)
                    OUTCOMES.labels("forged").inc()
                    await message.reject(requeue=False)
                    return
                sent = await self._service.send(user, request)
                break
            except DependencyError as exc:  # translated by the database and Redis adapters
                log.warning("send failed for now (%s); retrying in %.2f s", exc, delay)
                OUTCOMES.labels("retried").inc()
                await asyncio.sleep(delay)
                delay = min(self._max_backoff, delay * 2)
            except ChatError as exc:
                await self._reply(user, command, "error", _error(exc, command))
                await message.ack()
                OUTCOMES.labels("refused").inc()
                return
        await self._reply(user, command, "ack", sent.message)
        await message.ack()
        OUTCOMES.labels("replayed" if sent.replayed else "stored").inc()

    async def _reply(
        self, user: str, command: SendCommand, event: str, body: MessageView | ErrorEvent
    ) -> None:
        headers: dict[str, str | int] = {
            routing.EVENT_HEADER: event,
            routing.SESSION_HEADER: str(command.session_id),
        }
        if isinstance(body, MessageView):
            headers[routing.SEQ_HEADER] = body.seq
        if command.receipt:
            headers[routing.RECEIPT_HEADER] = command.receipt
        if command.connection:
            headers[routing.CONNECTION_HEADER] = command.connection
        tracing.inject(headers)
        with amqp.faults():
            await self._exchange.publish(
                aio_pika.Message(
                    msgspec.json.encode(body),
                    headers=headers,  # type: ignore[arg-type]
                    content_type="application/json",
                ),
                routing_key=routing.user_key(user),
            )


def _error(exc: ChatError, command: SendCommand) -> ErrorEvent:
    return ErrorEvent(
        code=exc.code,
        detail=exc.detail,
        client_message_id=command.client_message_id,
        session_id=command.session_id,
    )
