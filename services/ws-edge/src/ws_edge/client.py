"""One STOMP client: the sans-I/O STOMP core fed by its link (a WebSocket or a SockJS session,
:mod:`ws_edge.links`), its events turned into actions, its output handed to the link's outlet
(a bounded buffer: :class:`~ws_edge.sender.Sender` on a WebSocket); its timers
(heart-beats, the CONNECT deadline, token expiry); the authorisation of its subscriptions.

An idle connection costs the socket, the core and one timer handle: the sender's task exists
only while there is something to write; heart-beats and token expiry run on ``call_later``.

What it hands on: SENDs to :mod:`ws_edge.commands` (a narrow context, ``commands.Connection``);
topic subscriptions' replays and gap fills to :class:`~ws_edge.topics.TopicFeeds`; ACKs to
:class:`~ws_edge.delivered.DeliveredPoster`; the edge sees it as an ``edge.Subscriber``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import msgspec
from chat_stomp.connection import ServerConnection
from chat_stomp.events import (
    Acked,
    ConnectRequested,
    Event,
    SendReceived,
    Subscribed,
    Unsubscribed,
)
from chat_stomp.frames import EncodedMessage
from chat_stomp.parser import Limits
from websockets.exceptions import ConnectionClosed

from chat_common.dto import CLOSED, Membership, SendMessageRequest
from chat_common.erased import UserDeleted
from chat_common.errors import ChatError
from chat_common.handshake import bearer
from chat_common.ratelimit import Bucket, BucketPolicy, Decision, take

from . import commands
from .answers import SendAnswer, Stored
from .codes import EdgeCode, EdgeError, Forwarded
from .delivered import DeliveredPoster
from .disconnect import Disconnect, from_core
from .edge import Edge
from .fanout import CONTENT_TYPE, ERROR_KIND, encode, refusal_detail
from .hub import USER_QUEUES, UnknownDestination, session_of
from .links import Link, LinkLost
from .metrics import SUBSCRIPTIONS
from .resume import RESUME_HEADER, resume_point
from .sender import CLOSE_TIMEOUT_SECONDS
from .sends import PendingSend, SendPipe
from .topics import TopicFeeds

log = logging.getLogger(__name__)

BLOCKED_SUBSCRIBE = "session blocked (SESSION_BLOCKED): no subscriptions to it while it is blocked"
"""The ERROR ``message`` refusing a SUBSCRIBE to the topic of a session a participant blocks."""
CLOSED_SUBSCRIBE = (
    "session closed (SESSION_CLOSED): the other participant's account was deleted;"
    " no subscriptions to it"
)
"""The ERROR ``message`` refusing a SUBSCRIBE to the topic of a session closed for good."""

IDLE_CHECK_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
ERROR_QUEUE = "/user/queue/error"
ACK_QUEUE = "/user/queue/ack"


class ClientSession:
    def __init__(self, edge: Edge, link: Link, handshake_token: str | None) -> None:
        settings = edge.settings
        self.edge = edge
        self.link = link
        self.id = edge.new_id()
        self.email: str | None = None
        self.token = handshake_token
        self.expires_at = float("inf")  # wall clock, from the token's exp
        self.core = ServerConnection(
            Limits(
                max_frame_bytes=settings.max_frame_bytes,
                max_body=settings.max_body_bytes,
                max_subscriptions=settings.max_subscriptions,
                max_unacked=settings.max_unacked,
            ),
            heartbeat=(settings.heartbeat_send_ms, settings.heartbeat_expect_ms),
        )
        self._send_bucket: Bucket | None = None
        self._send_policy = BucketPolicy(settings.sends_burst, settings.sends_per_second)
        self.services = commands.Services(edge.broker, edge.upstream, settings.send_route)
        # SUBSCRIBE and UNSUBSCRIBE frames: each may bind or unbind a broker key and start a
        # history fetch, so they are metered like SENDs.
        self._subscribe_bucket: Bucket | None = None
        self._subscribe_policy = BucketPolicy(
            settings.subscribes_burst, settings.subscribes_per_second
        )
        self._opened = time.monotonic()
        self._sender = link.outlet(settings.max_outbound_bytes, settings.slow_close_seconds)
        self._timer: asyncio.TimerHandle | None = None
        self._ending: Disconnect | None = None
        self._topics: dict[str, uuid.UUID] = {}  # accepted topic subscriptions
        self._queues: set[str] = set()  # accepted user-queue subscriptions
        self._feeds = TopicFeeds(
            self,
            self._history,
            connection=self.id,
            max_held=settings.resume_max_buffered,
            gap_fill_attempts=settings.gap_fill_attempts,
            gap_fill_backoff_seconds=settings.gap_fill_backoff_seconds,
        )
        self._delivered = DeliveredPoster(
            edge.upstream, lambda: self.token, edge.spawn, settings.delivered_flush_seconds
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._sends: SendPipe | None = None  # made at the first SEND
        self.seated = False  # holds one of its user's connection seats (ws_edge.seats)

    @property
    def ending(self) -> Disconnect | None:
        """Why this connection is closing, once the edge or the client decided it."""
        return self._ending

    # -- the connection's life -------------------------------------------------------------

    async def run(self) -> None:
        self.edge.opened(self)
        self._arm_timer()
        try:
            async for data in self.link:
                if self._ending is not None:
                    break
                raw = data.encode() if isinstance(data, str) else data
                self.core.receive_data(raw, time.monotonic())
                await self._handle()
                if self._ending is not None or self.core.close_expected():
                    break
        except (ConnectionClosed, LinkLost):  # gone without a goodbye (a clean close ends the loop)
            if self._ending is None and not self.core.is_closed:
                self._ending = Disconnect.TRANSPORT_LOST
        finally:
            await self._finish()

    def disconnect(self, reason: Disconnect) -> None:
        """Close this connection for ``reason``: an ERROR frame first when the client can
        still read one, then the WebSocket close frame with the reason's code."""
        if reason is Disconnect.SLOW_CONSUMER:
            self._too_slow()
            return
        if self._ending is not None:
            return
        self._ending = reason
        self.core.send_error(reason.reason)
        self._flush()

    def abort(self) -> None:
        self.link.abort()

    # -- what the topic feeds write to (topics.Outlet) ---------------------------------------

    @property
    def open(self) -> bool:
        return self._ending is None

    def send(
        self, subscription: str, destination: str, message_id: str, encoded: EncodedMessage
    ) -> None:
        self.core.send_encoded(subscription, destination, message_id, encoded)

    def flush(self) -> None:
        self._flush()

    def send_error(self, message: str) -> None:
        self.core.send_error(message)

    async def room(self) -> None:
        await self._sender.room()

    def _history(
        self, session: uuid.UUID, after: int, up_to: int | None
    ) -> AsyncIterator[tuple[int, bytes]]:
        assert self.token is not None
        return self.edge.upstream.history_after(self.token, session, after, up_to)

    def _too_slow(self) -> None:
        self._ending = Disconnect.SLOW_CONSUMER
        self._sender.close(Disconnect.SLOW_CONSUMER)

    async def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._feeds.close()
        for task in list(self._tasks):
            task.cancel()
        if self._ending is None:
            closed = self.core.is_closed
            self._ending = from_core(self.core.close_reason) if closed else Disconnect.CLIENT
        if not self.core.is_closed:
            self.core.connection_lost()
        SUBSCRIPTIONS.dec(len(self._topics) + len(self._queues))
        self._topics.clear()
        self._queues.clear()
        self._delivered.close()
        await self.edge.closed(self, self._ending)
        self._sender.close(self._ending)
        await self._sender.finished(within=CLOSE_TIMEOUT_SECONDS * 2)

    # -- output ------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Hand what the core queued to the sender; close once the core or the edge decided."""
        if self._ending is Disconnect.SLOW_CONSUMER:
            return
        chunks = self.core.data_to_send(time.monotonic())
        if chunks and not self._sender.send(chunks):
            self._too_slow()
            return
        if self.core.close_expected() and self._ending is None:
            self._ending = from_core(self.core.close_reason)
        if self._ending is not None:
            self._sender.close(self._ending)

    # -- timers ------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        now = time.monotonic()
        delay = IDLE_CHECK_SECONDS
        deadline = self.core.next_deadline(now)
        if deadline is not None:
            delay = min(delay, deadline - now)
        if self.email is None:
            delay = min(delay, self._opened + CONNECT_TIMEOUT_SECONDS - now)
        delay = min(delay, self.expires_at - time.time())
        self._timer = asyncio.get_running_loop().call_later(max(0.01, delay), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._ending is not None or self.core.is_closed:
            return
        now = time.monotonic()
        if time.time() >= self.expires_at:
            self.disconnect(Disconnect.TOKEN_EXPIRED)
            return
        if self.email is None and now >= self._opened + CONNECT_TIMEOUT_SECONDS:
            self.disconnect(Disconnect.UNAUTHENTICATED)
            return
        self.core.check_heartbeats(now)
        self._flush()
        if self._ending is None:
            self._arm_timer()

    # -- what commands and the edge call ---------------------------------------------------

    def deliver(
        self,
        subscription: str,
        destination: str,
        message_id: str,
        encoded: EncodedMessage,
        seq: int | None,
    ) -> None:
        """A broker event for one of this connection's subscriptions."""
        if self._ending is not None:
            return
        if not self._feeds.deliver(subscription, destination, message_id, encoded, seq):
            self.core.send_encoded(subscription, destination, message_id, encoded)
        self._flush()

    def end_topic(
        self, subscription: str, destination: str, message_id: str, encoded: EncodedMessage
    ) -> None:
        """The session was blocked: its last event on this subscription, which then ends
        (events held for it, if any, are dropped: they are in the session's history)."""
        if self._ending is not None or subscription not in self._topics:
            return
        self._feeds.remove(subscription)
        self.core.send_encoded(subscription, destination, message_id, encoded)
        self._flush()
        session = self._topics.pop(subscription)
        SUBSCRIPTIONS.dec()
        self.spawn(self.edge.unsubscribed(self, subscription, session))

    def receipt(self, receipt_id: str) -> None:
        if self._ending is None:
            self.core.send_receipt(receipt_id)
            self._flush()

    def refuse(self, message: str, receipt: str | None = None) -> None:
        """ERROR frame, then close: what STOMP offers to refuse a frame. ``receipt``: the
        refused frame's ``receipt`` header, answered by the ERROR's ``receipt-id``."""
        self.core.send_error(message, receipt_id=receipt)
        self._flush()

    def error_message(
        self,
        code: EdgeCode | Forwarded,
        detail: str,
        receipt: str | None = None,
        *,
        client_message_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        """A MESSAGE on this connection's ``/user/queue/error`` subscriptions about what it
        sent (carrying ``receipt-id`` when the SEND asked for a receipt). Without such a
        subscription it is dropped, unless the SEND asked for a receipt: that one is answered
        by an ERROR frame (``receipt-id``, the same JSON body), then the connection closes."""
        body = msgspec.json.encode(EdgeError(code, detail, client_message_id, session_id))
        if receipt is not None and not self._error_queues():
            self.core.send_error(detail, body, receipt_id=receipt, content_type=CONTENT_TYPE)
            self._flush()
            return
        encoded = encode(ERROR_KIND, None, None, body, receipt)
        for sub_id in self._error_queues():
            self.core.send_encoded(sub_id, ERROR_QUEUE, f"err-{uuid.uuid4().hex}", encoded)
        self._flush()

    def refused(self, receipt: str, body: bytes) -> None:
        """message-svc refused a SEND of this connection that asked for ``receipt`` (the
        error event went to the ``/user/queue/error`` subscriptions). Without one, the
        receipt is answered by an ERROR frame with the event's body, then the close."""
        if self._ending is None and not self._error_queues():
            self.core.send_error(
                refusal_detail(body), body, receipt_id=receipt, content_type=CONTENT_TYPE
            )
            self._flush()

    def _error_queues(self) -> list[str]:
        """This connection's accepted ``/user/queue/error`` subscriptions."""
        return self._user_queue(ERROR_QUEUE)

    def _user_queue(self, destination: str) -> list[str]:
        return [
            sub_id
            for sub_id, sub in self.core.subscriptions.items()
            if sub.destination == destination and sub_id in self._queues
        ]

    def acked(self, receipt: str | None, stored: Stored) -> None:
        """message-svc stored a SEND of this connection: the stored message on this
        connection's ``/user/queue/ack`` subscriptions, then the RECEIPT."""
        if self._ending is not None:
            return
        encoded = encode("ack", stored.session, stored.seq, stored.body)
        for sub_id in self._user_queue(ACK_QUEUE):
            self.core.send_encoded(sub_id, ACK_QUEUE, f"ack-{uuid.uuid4().hex}", encoded)
        if receipt is not None:
            self.core.send_receipt(receipt)
        self._flush()

    def sends(self) -> SendPipe:
        """This connection's SENDs on their way to message-svc (:mod:`ws_edge.sends`)."""
        if self._sends is None:
            self._sends = SendPipe(
                self._store,
                self._answer,
                self.spawn,
                max_waiting=self.edge.settings.max_waiting_sends,
            )
        return self._sends

    async def _store(self, requests: list[SendMessageRequest]) -> list[SendAnswer]:
        assert self.token is not None
        return await self.edge.upstream.send(self.token, requests)

    async def _answer(self, pending: PendingSend, answer: SendAnswer) -> None:
        await commands.answer_send(self, pending, answer)

    async def member(self, session: uuid.UUID) -> Membership | None:
        assert self.email is not None
        assert self.token is not None
        return await self.edge.upstream.membership(self.email, self.token, session)

    def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        """Work that belongs to this connection; cancelled when it closes."""
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- events from the client ------------------------------------------------------------

    async def _handle(self) -> None:
        while events := self.core.events_received():
            for event in events:
                if self._ending is not None:
                    return
                try:
                    await self._on(event)
                except ChatError as exc:
                    self.refuse(exc.detail, _receipt_of(event))
                except Exception:
                    log.exception("connection %s: %s failed", self.id, type(event).__name__)
                    self.refuse("internal error", _receipt_of(event))
                self._flush()

    async def _on(self, event: Event) -> None:
        if isinstance(event, ConnectRequested):
            await self._on_connect(event)
        elif isinstance(event, Subscribed | Unsubscribed):
            if not self._take_subscribe_token():
                self.refuse("too many SUBSCRIBE/UNSUBSCRIBE frames; slow down", _receipt_of(event))
            elif isinstance(event, Subscribed):
                await self._on_subscribe(event)
            else:
                await self._on_unsubscribe(event)
        elif isinstance(event, SendReceived):
            await commands.handle_send(self, event)
        elif isinstance(event, Acked):
            self._on_ack(event)
        # Nacked: nothing to move; DisconnectRequested, ConnectionTerminated: the core has
        # queued what to say and closes; HeartbeatReceived: the core noted it.

    async def _on_connect(self, event: ConnectRequested) -> None:
        token = self.token or bearer(event.authorization_header) or event.passcode
        if not token:
            self.core.reject("no token: send Authorization or passcode in CONNECT")
            return
        if not self.edge.accepting:
            self.core.reject("edge restarting; reconnect")
            return
        try:
            identity = await self.edge.users.identify(token)
            answered = await self.edge.not_erased(identity)
        except UserDeleted as exc:
            self._refuse_deleted(exc)
            return
        except ChatError as exc:
            self.core.reject(exc.detail)
            return
        if not await self.edge.seats.take(identity.email, self.id):
            limit = self.edge.settings.max_connections_per_user
            self.core.reject(f"too many open connections for this user (at most {limit})")
            return
        self.seated = True
        self.token, self.email, self.expires_at = token, identity.email, identity.expires_at
        await self.edge.registered(self, identity.email)  # bound before CONNECTED goes out
        try:
            # again, now that the user's key is bound: an erasure writes its denial before it
            # commits, so one that found none here has its user-deleted event reach this edge.
            # Not when Redis did not answer the first time: the CONNECT would wait for it twice,
            # and an erasure that could not write its denial first sends its user-deleted event
            # again once it has (FlairBit calls again until it has), which closes this one.
            if answered:
                await self.edge.not_erased(identity)
        except UserDeleted as exc:
            self._refuse_deleted(exc)
            return
        self.core.accept(identity.email, time.monotonic())
        self.edge.accepted(self, identity.email, token)
        self._arm_timer()  # heart-beats negotiated, token expiry known

    def _refuse_deleted(self, exc: UserDeleted) -> None:
        """CONNECT with a token of a deleted account: ERROR ``USER_DELETED``, then the close,
        counted as ``user_deleted`` (not as a bad token)."""
        self.core.reject(f"{exc.code}: {exc.detail}")
        self._ending = Disconnect.USER_DELETED

    def take_send_token(self) -> Decision:
        """A token of this connection's SEND bucket (commands meter SENDs with it)."""
        decision = take(self._send_bucket, time.monotonic(), self._send_policy)
        self._send_bucket = decision.bucket
        return decision

    def _take_subscribe_token(self) -> bool:
        decision = take(self._subscribe_bucket, time.monotonic(), self._subscribe_policy)
        self._subscribe_bucket = decision.bucket
        return decision.allowed

    async def _on_subscribe(self, event: Subscribed) -> None:
        destination, sub_id = event.destination, event.subscription_id
        if destination in USER_QUEUES:
            self.edge.hub.add_queue(self.id, sub_id, destination)
            self._queues.add(sub_id)
        else:
            try:
                session = session_of(destination)
            except UnknownDestination:
                self.refuse(f"unknown destination {destination}", event.receipt)
                return
            resume_text = event.header(RESUME_HEADER)
            resume = None if resume_text is None else resume_point(resume_text)
            if resume_text is not None and resume is None:
                self.refuse(f"{RESUME_HEADER} must be a non-negative integer", event.receipt)
                return
            member = await self.member(session)
            if member is None:
                self.refuse("not a participant of this session", event.receipt)
                return
            if member.state == CLOSED:
                self.refuse(CLOSED_SUBSCRIBE, event.receipt)
                return
            if member.blocked_by:
                self.refuse(BLOCKED_SUBSCRIBE, event.receipt)
                return
            self._feeds.add(sub_id, resume)  # before the bind: a replay holds live events
            await self.edge.subscribed(self, sub_id, session)
            self._topics[sub_id] = session
            self._feeds.start(sub_id, destination)
        SUBSCRIPTIONS.inc()
        if event.receipt:
            self.core.send_receipt(event.receipt)

    async def _on_unsubscribe(self, event: Unsubscribed) -> None:
        sub_id = event.subscription_id
        self._feeds.remove(sub_id)
        if sub_id in self._topics:
            session = self._topics.pop(sub_id)
            SUBSCRIPTIONS.dec()
            await self.edge.unsubscribed(self, sub_id, session)
        elif sub_id in self._queues:
            self._queues.discard(sub_id)
            SUBSCRIPTIONS.dec()
            await self.edge.unsubscribed(self, sub_id, None)

    # -- delivered marks ---------------------------------------------------------------------

    def _on_ack(self, event: Acked) -> None:
        self._delivered.note(event.destination, event.message_ids)


def _receipt_of(event: Event) -> str | None:
    """The ``receipt`` header of a SEND or SUBSCRIBE (what an ERROR about it answers)."""
    return event.receipt if isinstance(event, SendReceived | Subscribed) else None
