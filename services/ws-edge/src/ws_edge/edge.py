"""The edge's shared state: the hub, the broker, the upstream clients, the live connections,
and the fan-out of each broker event to local subscribers (encoded once)."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from chat_common import routing
from chat_common.jwt_verify import UserTokenVerifier
from ws_edge.stomp.frames import EncodedMessage, encode_message

from .broker import Broker
from .hub import Hub
from .settings import Settings
from .upstream import Upstream

if TYPE_CHECKING:
    from .client import ClientSession

log = logging.getLogger(__name__)

CONNECTIONS = Gauge("chat_ws_connections", "Open WebSocket connections on this edge")
SUBSCRIPTIONS = Gauge("chat_ws_bound_keys", "Routing keys this edge's queue is bound to")
DELIVERED = Counter("chat_ws_delivered_total", "MESSAGE frames queued to clients", ["event"])
DISCONNECTS = Counter("chat_ws_disconnects_total", "Connections closed by the edge", ["reason"])


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class Edge:
    def __init__(
        self, settings: Settings, broker: Broker, upstream: Upstream, users: UserTokenVerifier
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.upstream = upstream
        self.users = users
        self.hub = Hub()
        self.clients: dict[str, ClientSession] = {}
        self._ids = itertools.count(1)
        self._events = itertools.count(1)

    def new_id(self) -> str:
        return f"{self.settings.instance_id}-{next(self._ids)}"

    # -- connections and their keys ------------------------------------------------------

    def opened(self, client: ClientSession) -> None:
        self.clients[client.id] = client
        CONNECTIONS.set(len(self.clients))

    async def registered(self, client: ClientSession, email: str) -> None:
        if self.hub.add_user(client.id, email):
            await self._bind(routing.user_key(email))

    async def subscribed(
        self, client: ClientSession, subscription: str, session: uuid.UUID
    ) -> None:
        if self.hub.add_topic(client.id, subscription, session):
            await self._bind(routing.session_key(session))

    async def unsubscribed(
        self, client: ClientSession, subscription: str, session: uuid.UUID | None
    ) -> None:
        if session is None:
            self.hub.remove_queue(client.id, subscription)
        elif self.hub.remove_topic(client.id, subscription, session):
            await self._unbind(routing.session_key(session))

    async def closed(self, client: ClientSession) -> None:
        self.clients.pop(client.id, None)
        CONNECTIONS.set(len(self.clients))
        for key in self.hub.drop_connection(client.id, client.email):
            await self._unbind(key)

    async def _bind(self, key: str) -> None:
        await self.broker.bind(key)
        SUBSCRIPTIONS.set(len(self.hub.keys()))

    async def _unbind(self, key: str) -> None:
        try:
            await self.broker.unbind(key)
        except Exception as exc:  # the binding goes with the queue anyway
            log.warning("unbind %s failed: %s", key, exc)
        SUBSCRIPTIONS.set(len(self.hub.keys()))

    # -- events from the broker ----------------------------------------------------------

    async def on_event(self, key: str, headers: Mapping[str, Any], body: bytes) -> None:
        event = _text(headers.get(routing.EVENT_HEADER)) or "message"
        session = _text(headers.get(routing.SESSION_HEADER))
        raw_seq = headers.get(routing.SEQ_HEADER)
        seq = int(raw_seq) if raw_seq is not None else None
        cc = [t for t in (_text(k) for k in headers.get("CC") or ()) if t]
        receipt = _text(headers.get(routing.RECEIPT_HEADER))
        targets = self.hub.targets([key, *cc], event)
        if targets:
            message_id = f"{session}:{seq}" if seq is not None else f"e{next(self._events)}"
            encoded = self.encode(event, session, seq, body, receipt)
            for target in targets:
                client = self.clients.get(target.connection)
                if client is not None:
                    client.deliver(
                        target.subscription, target.destination, message_id, encoded, seq
                    )
            DELIVERED.labels(event).inc(len(targets))
        if event == "ack" and receipt:
            client = self.clients.get(_text(headers.get(routing.CONNECTION_HEADER)) or "")
            if client is not None:
                client.receipt(receipt)

    @staticmethod
    def encode(
        event: str, session: str | None, seq: int | None, body: bytes, receipt: str | None = None
    ) -> EncodedMessage:
        headers = [("content-type", "application/json"), ("x-event", event)]
        if session:
            headers.append(("x-session-id", session))
        if seq is not None:
            headers.append(("x-seq", str(seq)))
        if receipt and event == "error":
            headers.append(("receipt-id", receipt))
        return encode_message(headers, body)
