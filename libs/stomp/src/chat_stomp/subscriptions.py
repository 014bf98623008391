"""Subscription bookkeeping and acknowledgement tracking for one connection.

Messages delivered on a ``client`` or ``client-individual`` subscription get a connection-unique
ack id and stay pending until acknowledged. In ``client`` mode an ACK (or NACK) of one message
settles it and every message delivered before it on the same subscription; in
``client-individual`` mode it settles that message alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from .events import AckMode
from .exceptions import LimitExceeded, ProtocolError


@dataclass(slots=True)
class Subscription:
    id: str
    destination: str
    ack_mode: AckMode
    unacked: dict[str, str] = field(default_factory=dict)
    """Pending deliveries, oldest first: ack id -> message id."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """What one ACK or NACK settled."""

    subscription: Subscription
    ack_id: str
    message_ids: tuple[str, ...]


class SubscriptionRegistry(Mapping[str, Subscription]):
    """Subscriptions by id, with the per-connection caps from ``Limits``."""

    def __init__(self, *, max_subscriptions: int, max_unacked: int) -> None:
        self._subs: dict[str, Subscription] = {}
        self._ack_owner: dict[str, str] = {}  # ack id -> subscription id
        self._max_subscriptions = max_subscriptions
        self._max_unacked = max_unacked
        self._next_ack = 0

    def __getitem__(self, sub_id: str) -> Subscription:
        return self._subs[sub_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._subs)

    def __len__(self) -> int:
        return len(self._subs)

    @property
    def unacked_count(self) -> int:
        return len(self._ack_owner)

    def add(self, sub_id: str, destination: str, ack_mode: AckMode) -> Subscription:
        if sub_id in self._subs:
            raise ProtocolError("duplicate subscription id")
        if len(self._subs) >= self._max_subscriptions:
            raise LimitExceeded("too many subscriptions")
        sub = self._subs[sub_id] = Subscription(sub_id, destination, ack_mode)
        return sub

    def remove(self, sub_id: str) -> Subscription:
        sub = self._subs.pop(sub_id, None)
        if sub is None:
            raise ProtocolError("unknown subscription")
        for ack_id in sub.unacked:
            del self._ack_owner[ack_id]
        return sub

    def find_by_destination(self, destination: str) -> Subscription | None:
        return next((s for s in self._subs.values() if s.destination == destination), None)

    def track(self, sub: Subscription, message_id: str) -> str | None:
        """Record a delivery; return the ack id to put in the MESSAGE (None in auto mode)."""
        if sub.ack_mode is AckMode.AUTO:
            return None
        if len(self._ack_owner) >= self._max_unacked:
            raise LimitExceeded("too many unacknowledged messages")
        self._next_ack += 1
        ack_id = str(self._next_ack)
        sub.unacked[ack_id] = message_id
        self._ack_owner[ack_id] = sub.id
        return ack_id

    def settle(self, ack_id: str) -> Settlement:
        """Settle a delivery by the ack id from its MESSAGE (STOMP 1.2 ``id`` header)."""
        sub_id = self._ack_owner.get(ack_id)
        if sub_id is None:
            raise ProtocolError("unknown ack id")
        sub = self._subs[sub_id]
        if sub.ack_mode is AckMode.CLIENT_INDIVIDUAL:
            covered = [ack_id]
        else:
            covered = []
            for pending in sub.unacked:
                covered.append(pending)
                if pending == ack_id:
                    break
        message_ids = tuple(sub.unacked.pop(a) for a in covered)
        for a in covered:
            del self._ack_owner[a]
        return Settlement(sub, ack_id, message_ids)

    def settle_message(self, message_id: str, sub_id: str | None) -> Settlement:
        """Settle by ``message-id`` (and ``subscription``, if given), as STOMP 1.0/1.1 do."""
        if sub_id is None:
            candidates = list(self._subs.values())
        else:
            sub = self._subs.get(sub_id)
            candidates = [] if sub is None else [sub]
        for sub in candidates:
            for ack_id, pending in sub.unacked.items():
                if pending == message_id:
                    return self.settle(ack_id)
        raise ProtocolError("unknown message-id")

    def settle_headers(
        self,
        ack_id: str | None,
        message_id: str | None,
        sub_id: str | None,
        *,
        by_message_id: bool,
    ) -> Settlement:
        """Settle from an ACK/NACK's ``id`` header, else (if allowed) its ``message-id``."""
        if ack_id:
            return self.settle(ack_id)
        if message_id and by_message_id:
            return self.settle_message(message_id, sub_id)
        raise ProtocolError("ACK and NACK require an id header")
