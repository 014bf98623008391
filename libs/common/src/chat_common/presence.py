"""Presence: who is online, the rules of its transitions (pure: no I/O, the clock passed in).

A user is **online** while at least one of their STOMP connections holds a live *lease* on any
edge, and **offline** once the last one closed (after a grace, so that a reconnect within it is
no change at all) or lapsed (its edge died and stopped renewing it). Each user has:

- ``leases``: connection id -> when its lease ends (renewed by its edge every third of a lease);
- ``online``: what was last *announced* to the user's peers;
- ``deadline``: when the user goes offline unless something happens: the latest lease end
  while connections are held, the close time plus the grace after the last one closed;
- ``seen``: the last time the user was known connected (connect, renewal, close).

Transitions (each returns what must be told to the user's peers, if anything)::

    connect    online=False -> online=True   announce "online"
               online=True  -> online=True   nothing (another device, or a reconnect in grace)
    renew      leases moved on; deadline = latest lease end
    disconnect lease dropped; last one: deadline = now + grace (online stays True)
    sweep      deadline <= now and no live lease -> online=False, announce "offline" (once:
               whoever sweeps claims the user)

:class:`Book` holds these rules in memory: the store of one edge when there is no Redis, and the
model that ``chat_common.presence_store``'s Redis scripts are tested against. :func:`visible`
reads a record the way every reader must: online only while its deadline is ahead, so a user
whose every edge died reads as offline even before anyone sweeps it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import msgspec

from . import routing

MAX_PEERS = 1_000  # peers told of a user's changes (sessions beyond it learn by asking)


class PresenceView(msgspec.Struct, frozen=True, rename="camel"):
    """A user's presence on the wire: the body of a ``presence`` event and an item of
    ``GET /api/chat/presence``. ``last_seen`` is None for a user never seen connected."""

    email: str
    online: bool
    last_seen: dt.datetime | None = None


class PresenceAnswer(msgspec.Struct, frozen=True):
    """``GET /api/chat/presence``: one item per email asked, in the order asked."""

    presence: list[PresenceView]


class Peers(msgspec.Struct, frozen=True):
    """session-svc ``GET /internal/peers``: who shares a session with the caller."""

    emails: list[str]


def instant(seconds: float | None) -> dt.datetime | None:
    """An epoch time (Redis's clock) as an aware UTC datetime, to the millisecond."""
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(round(seconds, 3), dt.UTC)


@dataclass(frozen=True, slots=True)
class Change:
    """A change to tell the peers of ``user`` (their user keys): online or offline."""

    user: str
    email: str
    online: bool
    seen: float
    peers: tuple[str, ...]

    def view(self) -> PresenceView:
        return PresenceView(self.email, self.online, instant(self.seen))


@dataclass(slots=True)
class Record:
    email: str
    online: bool = False
    seen: float | None = None
    deadline: float | None = None
    peers: tuple[str, ...] = ()
    leases: dict[str, float] = field(default_factory=dict)


def visible(online: bool, deadline: float | None, now: float) -> bool:
    """Whether a stored record reads as online at ``now``."""
    return online and deadline is not None and deadline > now


@dataclass
class Book:
    """Every user's presence, in memory. ``now`` is an epoch time in seconds."""

    lease: float
    grace: float
    records: dict[str, Record] = field(default_factory=dict)

    def _record(self, email: str) -> tuple[str, Record]:
        user = routing.user_key(email)
        record = self.records.get(user)
        if record is None:
            record = self.records[user] = Record(email)
        return user, record

    def _lapse(self, record: Record, now: float) -> None:
        for connection in [c for c, end in record.leases.items() if end <= now]:
            del record.leases[connection]

    def connect(
        self, email: str, connection: str, now: float, peers: tuple[str, ...] | None = None
    ) -> Change | None:
        """``connection`` of ``email`` opened; ``peers`` replaces the stored ones when known."""
        user, record = self._record(email)
        self._lapse(record, now)
        record.leases[connection] = now + self.lease
        record.deadline = max(record.leases.values())
        record.seen = now
        if peers is not None:
            record.peers = peers[:MAX_PEERS]
        if record.online:
            return None
        record.online = True
        return Change(user, record.email, True, now, record.peers)

    def renew(self, held: dict[str, list[str]], now: float) -> list[str]:
        """Extend the leases of the connections an edge holds (by email); return the emails
        none of whose connections was still recorded (swept while Redis was out of reach:
        the edge connects them again)."""
        lost = []
        for email, connections in held.items():
            record = self.records.get(routing.user_key(email))
            known = [c for c in connections if record is not None and c in record.leases]
            if record is None or not known:
                lost.append(email)
                continue
            for connection in known:
                record.leases[connection] = now + self.lease
            self._lapse(record, now)
            record.deadline = max(record.leases.values())
            record.seen = now
        return lost

    def forget(self, email: str) -> None:
        """Drop everything kept of the user (an erased account): no offline is announced."""
        self.records.pop(routing.user_key(email), None)

    def disconnect(self, email: str, connection: str, now: float) -> None:
        record = self.records.get(routing.user_key(email))
        if record is None:
            return
        record.leases.pop(connection, None)
        self._lapse(record, now)
        record.seen = now
        if record.leases:
            record.deadline = max(record.leases.values())
        elif record.online:
            record.deadline = now + self.grace

    def sweep(self, now: float) -> list[Change]:
        """Claim every user whose deadline passed with no live lease: offline, announced once."""
        changes = []
        for user, record in self.records.items():
            if not record.online or record.deadline is None or record.deadline > now:
                continue
            self._lapse(record, now)
            if record.leases:
                record.deadline = max(record.leases.values())
                continue
            record.online, record.deadline = False, None
            seen = record.seen if record.seen is not None else now
            changes.append(Change(user, record.email, False, seen, record.peers))
        return changes

    def read(self, email: str, now: float) -> PresenceView:
        record = self.records.get(routing.user_key(email))
        if record is None:
            return PresenceView(email, False, None)
        return PresenceView(
            record.email, visible(record.online, record.deadline, now), instant(record.seen)
        )
