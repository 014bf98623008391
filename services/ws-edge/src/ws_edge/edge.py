"""The edge's shared state: the live connections, the hub, the broker bindings, and the
fan-out of each broker event to the local subscribers that want it (encoded once).

Bindings follow the hub: the first local subscriber of a key binds it, the last one unbinds
it. A subscriber that arrives while the first one's bind is still in flight waits for that
bind, so nobody is told "subscribed" before the key is bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

from chat_stomp.frames import EncodedMessage

from chat_common import routing, tracing
from chat_common.errors import DependencyUnavailable
from chat_common.jwt_verify import UserIdentity

from .broker import Broker
from .disconnect import Disconnect
from .fanout import (
    ENDING_KINDS,
    SESSION_CHANGE_KINDS,
    USER_DELETED_KIND,
    BadEvent,
    encode_event,
    parse_event,
)
from .hub import TOPIC_PREFIX, Hub
from .metrics import BOUND_KEYS, CONNECTIONS, DELIVERED, DISCONNECTS, EVENTS
from .presence import EdgePresence
from .seats import MemorySeats, Seats
from .settings import Settings
from .upstream import Upstream

log = logging.getLogger(__name__)
TRACER = tracing.tracer(__name__)


class Identities(Protocol):
    """Who a token belongs to (``chat_common.jwt_verify.UserTokenVerifier`` in production)."""

    async def identify(self, token: str) -> UserIdentity: ...


class Erasures(Protocol):
    """Whether a token's user was deleted after it was issued
    (``chat_common.erased.ErasedUsers`` in production)."""

    async def check(self, identity: UserIdentity, *, fail_closed: bool) -> bool: ...


class Subscriber(Protocol):
    """What the edge needs of a connection (``ws_edge.client.Subscriber``): who it is,
    whether it holds a seat, and where its deliveries, receipts and refusals go."""

    id: str
    email: str | None
    seated: bool

    def deliver(
        self,
        subscription: str,
        destination: str,
        message_id: str,
        encoded: EncodedMessage,
        seq: int | None,
    ) -> None: ...

    def receipt(self, receipt_id: str) -> None: ...

    def refused(self, receipt: str, body: bytes) -> None: ...

    def end_topic(
        self, subscription: str, destination: str, message_id: str, encoded: EncodedMessage
    ) -> None:
        """Send ``encoded`` (a ``block`` or ``closed`` event) on a topic subscription, which
        then ends: the edge delivers nothing more on it."""

    def disconnect(self, reason: Disconnect) -> None: ...

    def abort(self) -> None:
        """Drop the connection at once (no closing handshake): the end of a shutdown."""


class Edge:
    def __init__(
        self,
        settings: Settings,
        broker: Broker,
        upstream: Upstream,
        users: Identities,
        seats: Seats | None = None,
        presence: EdgePresence | None = None,
        erased: Erasures | None = None,
    ) -> None:
        self.settings = settings
        self.erased = erased
        self.seats: Seats = seats or MemorySeats(settings.max_connections_per_user)
        self.presence = presence
        self.broker = broker
        self.upstream = upstream
        self.users = users
        self.hub = Hub()
        self.clients: dict[str, Subscriber] = {}
        self.accepting = True
        self._ids = itertools.count(1)
        self._events = itertools.count(1)
        self._binding: dict[str, asyncio.Future[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()

    def new_id(self) -> str:
        """A connection id unique across edge instances: ``{instance}-{n}``."""
        return f"{self.settings.instance_id}-{next(self._ids)}"

    # -- connections and their keys ------------------------------------------------------

    def opened(self, client: Subscriber) -> None:
        self.clients[client.id] = client
        CONNECTIONS.set(len(self.clients))

    async def registered(self, client: Subscriber, email: str) -> None:
        """An authenticated connection: its user's key carries its acks, errors and
        messages, so it is bound for as long as the user has a connection here."""
        await self._bound(routing.user_key(email), self.hub.add_user(client.id, email))

    async def not_erased(self, identity: UserIdentity) -> bool:
        """Raise ``chat_common.erased.UserDeleted`` when the token predates its user's
        erasure. Asked at CONNECT only (never per frame); while Redis cannot say, the
        connection goes on: it reaches nothing of the deleted user's, and FlairBit's repeated
        call closes it. True when the answer came from Redis (False: unchecked, or no
        Redis configured)."""
        if self.erased is None:
            return False
        return await self.erased.check(identity, fail_closed=False)

    def accepted(self, client: Subscriber, email: str, token: str) -> None:
        """CONNECTED went out: the connection counts for its user's presence."""
        if self.presence is not None:
            self.presence.connected(email, client.id, token)

    async def subscribed(self, client: Subscriber, subscription: str, session: uuid.UUID) -> None:
        first = self.hub.add_topic(client.id, subscription, session)
        await self._bound(routing.session_key(session), first)

    async def unsubscribed(
        self, client: Subscriber, subscription: str, session: uuid.UUID | None
    ) -> None:
        if session is None:
            self.hub.remove_queue(client.id, subscription)
        elif self.hub.remove_topic(client.id, subscription, session):
            await self._unbind(routing.session_key(session))

    def seats_held(self) -> dict[str, list[str]]:
        """This edge's seated connections by user (their leases to renew)."""
        held: dict[str, list[str]] = {}
        for client in self.clients.values():
            if client.seated and client.email is not None:
                held.setdefault(client.email, []).append(client.id)
        return held

    async def closed(self, client: Subscriber, reason: Disconnect) -> None:
        if client.seated and client.email is not None:
            client.seated = False
            await self.seats.release(client.email, client.id)
        if self.presence is not None and client.email is not None:
            # in the background (drained at shutdown): it may wait for the record of the
            # connection's CONNECT, and the close path waits for nothing of presence; a
            # deleted user's presence is forgotten, not closed
            if reason is Disconnect.USER_DELETED:
                self.spawn(self.presence.forgotten(client.email, client.id))
            else:
                self.spawn(self.presence.closed(client.email, client.id))
        if self.clients.pop(client.id, None) is None:
            return
        CONNECTIONS.set(len(self.clients))
        DISCONNECTS.labels(reason.value).inc()
        for key in self.hub.drop_connection(client.id, client.email):
            await self._unbind(key)

    async def _bound(self, key: str, first: bool) -> None:
        if not first:
            pending = self._binding.get(key)
            if pending is not None:
                await asyncio.shield(pending)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._binding[key] = future
        try:
            await self.broker.bind(key)
        except Exception as exc:
            log.warning("bind %s failed: %s", key, exc)
            failure = DependencyUnavailable("broker unavailable; reconnect later")
            future.set_exception(failure)
            future.exception()
            raise failure from exc
        except BaseException:
            future.cancel()
            raise
        else:
            future.set_result(None)
        finally:
            if self._binding.get(key) is future:
                del self._binding[key]
            BOUND_KEYS.set(self.hub.key_count())

    async def _unbind(self, key: str) -> None:
        if self.hub.needs(key):
            return  # somebody subscribed again meanwhile
        try:
            await self.broker.unbind(key)
        except Exception as exc:  # the binding goes with the queue anyway
            log.warning("unbind %s failed: %s", key, exc)
        BOUND_KEYS.set(self.hub.key_count())

    # -- events from the broker ----------------------------------------------------------

    def on_event(self, routing_key: str, headers: Mapping[str, Any], body: bytes) -> None:
        """Fan one broker event out; synchronous, so events keep their delivery order."""
        try:
            event = parse_event(routing_key, headers, body)
        except BadEvent as exc:
            log.warning("dropped an event on %s: %s", routing_key, exc)
            EVENTS.labels("bad").inc()
            return
        EVENTS.labels(event.kind).inc()
        if event.kind == USER_DELETED_KIND:
            self._user_deleted(event.keys)
            return
        targets = self.hub.targets(event.keys, event.kind)
        if targets:
            encoded = encode_event(event)
            message_id = event.message_id or f"ev-{next(self._events)}"
            # A "ws push" span under the broker's CONSUMER span, only when that one records:
            # the MESSAGE frames queued to every local subscription (each connection's writer
            # task then sends them to its socket).
            ends = event.kind in ENDING_KINDS
            with tracing.child_span(TRACER, "ws push") as push:
                for target in targets:
                    client = self.clients.get(target.connection)
                    if client is None:
                        continue
                    if ends and target.destination.startswith(TOPIC_PREFIX):
                        client.end_topic(
                            target.subscription, target.destination, message_id, encoded
                        )
                    else:
                        client.deliver(
                            target.subscription, target.destination, message_id, encoded, event.seq
                        )
                if push is not None:
                    push.set_attributes(
                        {
                            "chat.event": event.kind,
                            "chat.ws.subscriptions": len(targets),
                            tracing.MESSAGING_MESSAGE_ID: message_id,
                        }
                    )
            DELIVERED.labels(event.kind).inc(len(targets))
        if event.kind in SESSION_CHANGE_KINDS and event.session is not None:
            self._session_changed(event.session)
        if event.kind in ("ack", "error") and event.receipt and event.connection:
            client = self.clients.get(event.connection)
            if client is not None and event.kind == "ack":
                client.receipt(event.receipt)
            elif client is not None:  # a refused SEND: its receipt never goes unanswered
                client.refused(event.receipt, event.body)

    def _user_deleted(self, keys: tuple[str, ...]) -> None:
        """FlairBit deleted the user of these keys: close each of their connections here with
        an ERROR frame (``USER_DELETED``)."""
        for key in keys:
            for connection in self.hub.connections_of(key):
                client = self.clients.get(connection)
                if client is not None:
                    client.disconnect(Disconnect.USER_DELETED)

    def _session_changed(self, session_text: str) -> None:
        """A block, an unblock or a close: membership answers cached for the session are stale (a
        SUBSCRIBE or a typing SEND asks session-svc again)."""
        try:
            session = uuid.UUID(session_text)
        except ValueError:
            return
        self.upstream.forget_session(session)

    # -- the broker's connection ---------------------------------------------------------

    def broker_lost(self) -> None:
        """Events routed to this edge are being lost: close every client (1013) so that it
        reconnects, here or elsewhere, and resumes from the last seq it saw."""
        self.disconnect_all(Disconnect.BROKER_LOST)

    def broker_restored(self) -> None:
        self.spawn(self.broker.rebind(self.hub.keys()))

    # -- the edge's life -----------------------------------------------------------------

    def disconnect_all(self, reason: Disconnect) -> None:
        for client in list(self.clients.values()):
            client.disconnect(reason)

    def spawn(self, job: Coroutine[Any, Any, Any]) -> None:
        """Work that outlives a connection (its last delivered marks); drained at shutdown."""
        task = asyncio.create_task(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, grace: float) -> None:
        if not self._background:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*self._background, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
