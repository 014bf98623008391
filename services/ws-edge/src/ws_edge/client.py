"""One WebSocket client: the sans-I/O STOMP core fed by the socket, its events turned into
actions, and its output written by a task through a bounded buffer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from typing import Any

import msgspec
from websockets.asyncio.server import ServerConnection as Socket
from websockets.exceptions import ConnectionClosed

from chat_common import routing, tracing
from chat_common.dto import SendCommand, SendMessageRequest
from chat_common.errors import ChatError
from chat_common.ratelimit import Bucket, BucketPolicy, take
from ws_edge.stomp.connection import ServerConnection
from ws_edge.stomp.events import (
    Acked,
    ConnectionTerminated,
    ConnectRequested,
    DisconnectRequested,
    Event,
    SendReceived,
    Subscribed,
    Unsubscribed,
)
from ws_edge.stomp.frames import EncodedMessage
from ws_edge.stomp.parser import Limits

from .edge import DISCONNECTS, Edge
from .hub import USER_QUEUES, UnknownDestination, session_of
from .resume import ResumeOverflow, SeqGate

log = logging.getLogger(__name__)


class Typing(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    session_id: uuid.UUID
    typing: bool = True


class ReadMark(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    session_id: uuid.UUID
    up_to_seq: int


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class ClientSession:
    def __init__(self, edge: Edge, socket: Socket, handshake_token: str | None) -> None:
        settings = edge.settings
        self.edge = edge
        self.socket = socket
        self.id = edge.new_id()
        self.email: str | None = None
        self.token = handshake_token
        self.expires_at = float("inf")
        self.core = ServerConnection(
            Limits(
                max_frame_bytes=settings.max_frame_bytes,
                max_subscriptions=settings.max_subscriptions,
            ),
            heartbeat=(settings.heartbeat_send_ms, settings.heartbeat_expect_ms),
        )
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._writable = asyncio.Event()
        self._closing: tuple[int, str] | None = None
        self._gates: dict[str, SeqGate[tuple[str, str, EncodedMessage]]] = {}
        self._topics: dict[str, uuid.UUID] = {}
        self._profiles: dict[uuid.UUID, str] = {}
        self._bucket: Bucket | None = None
        self._policy = BucketPolicy(settings.sends_burst, settings.sends_per_second)
        self._delivered: dict[uuid.UUID, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the connection's life -------------------------------------------------------------

    async def run(self) -> None:
        self.edge.opened(self)
        writer = asyncio.create_task(self._write())
        ticker = asyncio.create_task(self._tick())
        try:
            async for data in self.socket:
                raw = data.encode() if isinstance(data, str) else data
                self.core.receive_data(raw, time.monotonic())
                await self._handle(self.core.events_received())
                self._flush()
                if self.core.close_expected() or self._closing:
                    break
        except ConnectionClosed:
            pass
        finally:
            if not self.core.is_closed:
                self.core.connection_lost()
            ticker.cancel()
            for task in self._tasks:
                task.cancel()
            await self.edge.closed(self)
            self._close(*(self._closing or (1000, "")))
            with contextlib.suppress(asyncio.TimeoutError, ConnectionClosed):
                await asyncio.wait_for(writer, 5)
            writer.cancel()

    def shutdown(self) -> None:
        """The edge is going away: tell the client to reconnect elsewhere (1012)."""
        DISCONNECTS.labels("shutdown").inc()
        self._close(1012, "edge restarting")

    def _close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = (code, reason)
        self._writable.set()

    async def _write(self) -> None:
        while True:
            await self._writable.wait()
            self._writable.clear()
            while self._out:
                chunk = self._out.popleft()
                self._out_bytes -= len(chunk)
                await self.socket.send(chunk, text=True)
            if self._closing is not None:
                await self.socket.close(*self._closing)
                return

    async def _tick(self) -> None:
        while True:
            now = time.monotonic()
            deadline = self.core.next_deadline(now)
            wall_left = self.expires_at - time.time()
            wait = min(deadline - now if deadline else 30.0, wall_left, 30.0)
            await asyncio.sleep(max(0.01, wait))
            if time.time() >= self.expires_at:
                DISCONNECTS.labels("token_expired").inc()
                self.core.send_error("token expired")
            else:
                self.core.check_heartbeats(time.monotonic())
            self._flush()

    def _flush(self) -> None:
        for chunk in self.core.data_to_send(time.monotonic()):
            self._out.append(chunk)
            self._out_bytes += len(chunk)
        if self._out_bytes > self.edge.settings.max_outbound_bytes:
            DISCONNECTS.labels("slow_consumer").inc()
            self._out.clear()
            self._out_bytes = 0
            self._close(1008, "client too slow: outbound buffer full")
        elif self.core.close_expected():
            self._close(1000, "")
        if self._out or self._closing:
            self._writable.set()

    # -- events from the broker (via the edge) ---------------------------------------------

    def deliver(
        self,
        subscription: str,
        destination: str,
        message_id: str,
        encoded: EncodedMessage,
        seq: int | None,
    ) -> None:
        gate = self._gates.get(subscription)
        items = [(destination, message_id, encoded)]
        if gate is not None:
            try:
                items = gate.live(seq, (destination, message_id, encoded))
            except ResumeOverflow:
                self.core.send_error("too many events while resuming; reconnect")
                items = []
        for destination_, message_id_, encoded_ in items:
            self.core.send_encoded(subscription, destination_, message_id_, encoded_)
        self._flush()

    def receipt(self, receipt_id: str) -> None:
        self.core.send_receipt(receipt_id)
        self._flush()

    def local_error(self, code: str, detail: str, receipt: str | None = None, **extra: Any) -> None:
        """An error about what this client sent, on its /user/queue/error subscriptions."""
        body = msgspec.json.encode({"code": code, "detail": detail, **extra})
        encoded = self.edge.encode("error", None, None, body, receipt)
        for sub_id, sub in self.core.subscriptions.items():
            if sub.destination == "/user/queue/error":
                self.core.send_encoded(sub_id, sub.destination, f"err-{uuid.uuid4().hex}", encoded)

    # -- events from the client ------------------------------------------------------------

    async def _handle(self, events: list[Event]) -> None:
        for event in events:
            try:
                await self._on(event)
            except ChatError as exc:
                self.core.send_error(exc.detail)
            self._flush()

    async def _on(self, event: Event) -> None:
        if isinstance(event, ConnectRequested):
            await self._on_connect(event)
        elif isinstance(event, Subscribed):
            await self._on_subscribe(event)
        elif isinstance(event, Unsubscribed):
            self._gates.pop(event.subscription_id, None)
            session = self._topics.pop(event.subscription_id, None)
            await self.edge.unsubscribed(self, event.subscription_id, session)
        elif isinstance(event, SendReceived):
            await self._on_send(event)
        elif isinstance(event, Acked):
            self._on_ack(event)
        elif isinstance(event, DisconnectRequested | ConnectionTerminated):
            pass  # the core has queued what to say and closes

    async def _on_connect(self, event: ConnectRequested) -> None:
        token = self.token or _bearer(event.authorization_header) or event.passcode
        if not token:
            self.core.reject("no token: send Authorization or passcode in CONNECT")
            return
        try:
            identity = await self.edge.users.identify(token)
        except ChatError as exc:
            DISCONNECTS.labels("unauthenticated").inc()
            self.core.reject(exc.detail)
            return
        self.token, self.email, self.expires_at = token, identity.email, identity.expires_at
        self.core.accept(identity.email, time.monotonic())
        await self.edge.registered(self, identity.email)

    async def _on_subscribe(self, event: Subscribed) -> None:
        destination, sub_id = event.destination, event.subscription_id
        if destination in USER_QUEUES:
            self.edge.hub.add_queue(self.id, sub_id, destination)
        else:
            try:
                session = session_of(destination)
            except UnknownDestination:
                self.core.send_error(f"unknown destination {destination}")
                return
            member = await self._member(session)
            if member is None:
                self.core.send_error("not a participant of this session")
                return
            resume = event.header("x-resume-after-seq")
            if resume is not None:
                if not resume.isdigit():
                    self.core.send_error("x-resume-after-seq must be a non-negative integer")
                    return
                self._gates[sub_id] = SeqGate(int(resume))
            self._topics[sub_id] = session
            await self.edge.subscribed(self, sub_id, session)
            if resume is not None:
                self._spawn(self._replay(sub_id, destination, session, int(resume)))
        if event.receipt:
            self.core.send_receipt(event.receipt)

    async def _member(self, session: uuid.UUID) -> dict[str, Any] | None:
        assert self.email is not None
        assert self.token is not None
        member = await self.edge.upstream.membership(self.email, self.token, session)
        if member is not None:
            self._profiles[session] = str(member["me"]["profileId"])
        return member

    async def _replay(self, sub_id: str, destination: str, session: uuid.UUID, after: int) -> None:
        gate = self._gates[sub_id]
        assert self.token is not None
        try:
            async for seq, body in self.edge.upstream.history_after(self.token, session, after):
                if gate.admit(seq):
                    encoded = self.edge.encode("message", str(session), seq, body)
                    self.core.send_encoded(sub_id, destination, f"{session}:{seq}", encoded)
                    self._flush()
        except ChatError as exc:
            self.core.send_error(f"cannot resume: {exc.detail}")
        for destination_, message_id, encoded in gate.finish():
            self.core.send_encoded(sub_id, destination_, message_id, encoded)
        self._flush()

    async def _on_send(self, event: SendReceived) -> None:
        destination = event.destination
        if destination == "/app/chat.send":
            await self._chat_send(event)
        elif destination == "/app/chat.typing":
            await self._typing(event)
        elif destination == "/app/chat.read":
            await self._read(event)
        else:
            self.core.send_error(f"unknown destination {destination}")

    async def _chat_send(self, event: SendReceived) -> None:
        try:
            request = msgspec.json.decode(event.body, type=SendMessageRequest)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            self.local_error("INVALID_INPUT", str(exc), event.receipt)
            return
        decision = take(self._bucket, time.monotonic(), self._policy)
        self._bucket = decision.bucket
        if not decision.allowed:
            self.local_error(
                "RATE_LIMITED",
                f"too many sends; retry in {decision.retry_after:.1f} s",
                event.receipt,
                clientMessageId=str(request.client_message_id),
            )
            return
        assert self.email is not None
        command = SendCommand(
            user=self.email,
            session_id=request.session_id,
            content=request.content,
            client_message_id=request.client_message_id,
            receipt=event.receipt,
            connection=self.id,
        )
        headers: dict[str, Any] = {"x-user": self.email}
        tracing.inject(headers)
        try:
            await self.edge.broker.publish_send(msgspec.json.encode(command), headers)
        except Exception as exc:
            log.warning("chat.send publish failed: %s", exc)
            self.local_error(
                "UNAVAILABLE",
                "the message was not accepted; send it again",
                event.receipt,
                clientMessageId=str(request.client_message_id),
            )

    async def _typing(self, event: SendReceived) -> None:
        try:
            typing = msgspec.json.decode(event.body, type=Typing)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            self.local_error("INVALID_INPUT", str(exc), event.receipt)
            return
        if await self._member(typing.session_id) is None:
            self.core.send_error("not a participant of this session")
            return
        body = msgspec.json.encode(
            {
                "sessionId": str(typing.session_id),
                "email": self.email,
                "profileId": self._profiles.get(typing.session_id),
                "typing": typing.typing,
            }
        )
        headers = {
            routing.EVENT_HEADER: "typing",
            routing.SESSION_HEADER: str(typing.session_id),
        }
        await self.edge.broker.publish_event(routing.session_key(typing.session_id), body, headers)
        if event.receipt:
            self.core.send_receipt(event.receipt)

    async def _read(self, event: SendReceived) -> None:
        try:
            mark = msgspec.json.decode(event.body, type=ReadMark)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            self.local_error("INVALID_INPUT", str(exc), event.receipt)
            return
        assert self.token is not None
        status = await self.edge.upstream.mark(self.token, mark.session_id, "read", mark.up_to_seq)
        if status == 200:
            if event.receipt:
                self.core.send_receipt(event.receipt)
        else:
            self.local_error("READ_REFUSED", f"the read mark was refused ({status})", event.receipt)

    def _on_ack(self, event: Acked) -> None:
        """Client-acknowledged messages move the delivered mark (coalesced per session)."""
        for message_id in event.message_ids:
            session_text, _, seq_text = message_id.partition(":")
            if not seq_text.isdigit():
                continue
            try:
                session = uuid.UUID(session_text)
            except ValueError:
                continue
            self._delivered[session] = max(self._delivered.get(session, 0), int(seq_text))
        if self._delivered and not any(t.get_name() == "delivered" for t in self._tasks):
            self._spawn(self._flush_delivered(), name="delivered")

    async def _flush_delivered(self) -> None:
        await asyncio.sleep(self.edge.settings.delivered_flush_seconds)
        marks, self._delivered = self._delivered, {}
        assert self.token is not None
        for session, seq in marks.items():
            with contextlib.suppress(ChatError):
                await self.edge.upstream.mark(self.token, session, "delivered", seq)

    def _spawn(self, job: Any, name: str | None = None) -> None:
        task = asyncio.create_task(job, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
