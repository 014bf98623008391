"""Which edge serves a SockJS session's HTTP requests. A session lives on the edge that opened
it, and its requests (the streams or polls, each ``xhr_send``) must all reach that edge, from
any gateway instance. With one edge address (``WS_EDGE_URL``, a Service that spreads
connections) that only holds for one edge; given the edges themselves (``SOCKJS_EDGES``, or
``SOCKJS_EDGES_DNS``: a headless Service's name, resolved every few seconds), every gateway
picks the same edge for a session id by rendezvous hashing (:func:`pick`), with no shared
state. When an edge comes or goes, only the sessions it held (or now wins) move: those are
closed (``xhr_send`` to an edge that does not know the session gets 404), and the client
reconnects and resumes as after an edge restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]


def pick(session: str, edges: Sequence[str]) -> str:
    """The edge (of ``edges``, not empty) that serves ``session``: the highest hash of the
    pair, so each edge's share is even and adding one moves only the sessions it wins."""

    def weight(edge: str) -> bytes:
        return hashlib.blake2b(f"{edge}\n{session}".encode(), digest_size=8).digest()

    return max(edges, key=weight)


def parse_dns(target: str) -> tuple[str, int]:
    """``host:port`` of ``SOCKJS_EDGES_DNS``."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"SOCKJS_EDGES_DNS must be host:port, got {target!r}")
    return host, int(port)


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, as edge base URLs (sorted)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    urls = set()
    for family, _, _, _, address in infos:
        ip = str(address[0])
        urls.add(f"http://[{ip}]:{port}" if family == socket.AF_INET6 else f"http://{ip}:{port}")
    return sorted(urls)


class EdgeDirectory:
    """The edges a gateway spreads SockJS sessions over: a fixed list, or one kept from DNS
    (the last good answer stays while DNS fails or answers nothing)."""

    def __init__(
        self,
        fallback: str,
        edges: Sequence[str] = (),
        dns: str | None = None,
        *,
        resolver: Resolver = resolve,
        refresh_seconds: float = 5.0,
    ) -> None:
        self._fallback = fallback
        self._edges: list[str] = sorted(edges)
        self._dns = parse_dns(dns) if dns else None
        self._resolver = resolver
        self._refresh = refresh_seconds
        self._task: asyncio.Task[None] | None = None

    @property
    def edges(self) -> list[str]:
        return list(self._edges)

    def for_session(self, session: str | None) -> str:
        """The edge for ``session`` (None, or no edges known: the fallback address)."""
        if session is None or not self._edges:
            return self._fallback
        return pick(session, self._edges)

    async def refresh(self) -> None:
        if self._dns is None:
            return
        try:
            found = await self._resolver(*self._dns)
        except OSError as exc:
            log.warning("SockJS edges not resolved (%s); keeping %d", exc, len(self._edges))
            return
        if found:
            self._edges = sorted(found)

    async def start(self) -> None:
        if self._dns is not None:
            await self.refresh()
            self._task = asyncio.create_task(self._keep())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            await self.refresh()
