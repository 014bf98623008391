"""The edge's side of presence: its connections' leases, the sweep, and the pushes.

A connection counts once its CONNECT is accepted: the edge asks session-svc for the user's
peers (``GET /internal/peers``, the user's own token), records the connection's lease in the
store (``chat_common.presence_store``: Redis, shared by every edge; or this edge's memory) and,
when that made the user online, publishes a ``presence`` event to ``chat.presence`` routed by
the peers' user keys (the first as routing key, the others in ``CC``, at most
:data:`CC_CHUNK` keys per publish): each peer's connections get it on
``/user/queue/presence``. A close only records the close; the offline is announced by a
sweep once the grace has passed with no connection back (so a reconnect within the grace
announces nothing), or once a dead edge's leases lapsed. Every edge sweeps; the store lets one
sweep claim each offline. None of this is on the path of a message.

Faults of Redis, session-svc or RabbitMQ are logged and skipped: a connection is never refused
for presence. What is lost then: an online or offline push (peers still read the state from
``GET /api/chat/presence``); a lease not renewed in time makes the user offline until the next
renewal, which notices it and connects the user again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import msgspec

from chat_common import routing
from chat_common.errors import DependencyUnavailable
from chat_common.presence import Change
from chat_common.presence_store import PresenceStore

from .metrics import PRESENCE_CHANGES

log = logging.getLogger(__name__)

CC_CHUNK = 100  # peers' keys per publish
KIND = "presence"
CONNECT_WAIT_SECONDS = 5.0  # the longest a close waits for its connection's record


class Publisher(Protocol):
    async def publish_presence(self, key: str, body: bytes, headers: dict[str, Any]) -> None: ...


class PeerFinder(Protocol):
    async def peers(self, token: str) -> tuple[str, ...]: ...


def publications(change: Change) -> list[tuple[str, bytes, dict[str, Any]]]:
    """The publishes that tell ``change`` to its peers (pure): one per chunk of peers."""
    body = msgspec.json.encode(change.view())
    found = []
    peers = list(dict.fromkeys(change.peers))
    for start in range(0, len(peers), CC_CHUNK):
        key, *cc = peers[start : start + CC_CHUNK]
        headers: dict[str, Any] = {routing.EVENT_HEADER: KIND}
        if cc:
            headers["CC"] = cc
        found.append((key, body, headers))
    return found


class EdgePresence:
    def __init__(self, store: PresenceStore, broker: Publisher, peers: PeerFinder) -> None:
        self.store = store
        self._broker = broker
        self._peers = peers
        self._held: dict[str, dict[str, None]] = {}  # email -> this edge's connections
        self._connecting: dict[str, asyncio.Task[None]] = {}

    def connected(self, email: str, connection: str, token: str) -> None:
        """An accepted CONNECT: recorded in the background (CONNECTED does not wait)."""
        self._held.setdefault(email, {})[connection] = None
        task = asyncio.create_task(self._connect(email, connection, token))
        self._connecting[connection] = task
        task.add_done_callback(lambda _: self._connecting.pop(connection, None))

    async def _connect(self, email: str, connection: str, token: str) -> None:
        peers: tuple[str, ...] | None
        try:
            peers = await self._peers.peers(token)
        except DependencyUnavailable as exc:
            log.info("peers of a connection not known now (%s): the stored ones are told", exc)
            peers = None
        try:
            change = await self.store.connect(email, connection, peers)
        except DependencyUnavailable as exc:
            log.warning("presence of %s not recorded (%s)", connection, exc)
            return
        if change is not None:
            await self.announce(change)

    async def closed(self, email: str, connection: str) -> None:
        held = self._held.get(email)
        if held is None or connection not in held:
            return
        del held[connection]
        if not held:
            del self._held[email]
        connecting = self._connecting.get(connection)
        if connecting is not None:  # the record lands before the close is recorded
            await asyncio.wait({connecting}, timeout=CONNECT_WAIT_SECONDS)
        try:
            await self.store.disconnect(email, connection)
        except DependencyUnavailable as exc:
            log.info("close of %s not recorded (%s); its lease ends it", connection, exc)

    async def forgotten(self, email: str, connection: str) -> None:
        """The user's account was deleted and this connection closed for it: nothing of the
        user is kept (no last seen, no offline announced to anyone)."""
        held = self._held.get(email)
        if held is not None:
            held.pop(connection, None)
            if not held:
                del self._held[email]
        connecting = self._connecting.get(connection)
        if connecting is not None:
            await asyncio.wait({connecting}, timeout=CONNECT_WAIT_SECONDS)
        try:
            await self.store.forget(email)
        except DependencyUnavailable as exc:
            log.warning("presence of a deleted user not removed (%s)", exc)

    async def renew(self) -> None:
        """Extend this edge's leases; connect again the users a sweep took offline meanwhile."""
        held = {email: list(connections) for email, connections in self._held.items()}
        try:
            lost = await self.store.renew(held)
        except DependencyUnavailable as exc:
            log.warning("presence leases not renewed (%s)", exc)
            return
        for email in lost:
            for connection in list(self._held.get(email, ())):
                try:
                    change = await self.store.connect(email, connection, None)
                except DependencyUnavailable as exc:
                    log.warning("presence of %s not recorded again (%s)", connection, exc)
                    return
                if change is not None:
                    await self.announce(change)

    async def sweep(self) -> None:
        try:
            changes = await self.store.sweep()
        except DependencyUnavailable as exc:
            log.warning("presence sweep skipped (%s)", exc)
            return
        for change in changes:
            await self.announce(change)

    async def announce(self, change: Change) -> None:
        PRESENCE_CHANGES.labels("online" if change.online else "offline").inc()
        for key, body, headers in publications(change):
            try:
                await self._broker.publish_presence(key, body, headers)
            except DependencyUnavailable as exc:
                log.warning("presence of a user not pushed to some peers (%s)", exc)
                return


async def keep(presence: EdgePresence, renew_every: float, sweep_every: float) -> None:
    """Renew this edge's leases and sweep for offline users, until cancelled."""
    loop = asyncio.get_running_loop()
    next_renewal = loop.time() + renew_every
    while True:
        await asyncio.sleep(min(sweep_every, max(0.0, next_renewal - loop.time())))
        try:
            if loop.time() >= next_renewal:
                next_renewal = loop.time() + renew_every
                await presence.renew()
            await presence.sweep()
        except Exception:
            log.exception("presence upkeep failed")
