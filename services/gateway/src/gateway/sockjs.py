"""SockJS under ``/ws/`` relayed to ws-edge: ``/ws/info`` and the HTTP transports (xhr
streaming and polling, EventSource, ``xhr_send``) are forwarded as they come, answers streamed
chunk by chunk, each session's to the same edge (:mod:`gateway.edges`); the ``websocket``
transport goes through :mod:`gateway.wsproxy` like ``/ws``.

As for ``/ws``, the gateway checks the browser's ``Origin`` itself and the edge never sees it;
CORS answers are the gateway's (its CORS middleware, by ``ALLOWED_ORIGINS``), so the edge's
are dropped. A streaming answer has no overall deadline: the edge writes at least a heartbeat
every 25 seconds, so an answer silent for ``SOCKJS_READ_TIMEOUT_SECONDS`` is a dead edge.
These exchanges hold a connection each (a stream for as long as it lasts, a poll for up to a
heartbeat), so they have their own pool (``SOCKJS_MAX_CONNECTIONS``), apart from the API's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from starlette.requests import Request
from starlette.responses import Response

from chat_common.handshake import origin_allowed
from chat_common.problems import problem_response
from chat_common.web import read_body

from .edges import EdgeDirectory
from .proxy import forward, upstream_client
from .settings import Settings

_DROP_REQUEST = frozenset({"origin"})
_DROP_RESPONSE = frozenset(
    {
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-max-age",
    }
)


def edge_http_url(ws_edge_url: str) -> str:
    """The edge's HTTP base URL from its WebSocket one (ws -> http, wss -> https)."""
    if ws_edge_url.startswith("ws"):
        return "http" + ws_edge_url[2:]
    return ws_edge_url


def session_of(path: str) -> str | None:
    """The SockJS session id of ``/ws/{server}/{session}/{transport}`` (None for ``/ws/info``
    and the like, which any edge answers)."""
    parts = path.split("/")
    return parts[3] if len(parts) == 5 and parts[1] == "ws" and parts[3] else None


@dataclass(frozen=True, slots=True)
class SockJSRelay:
    """What relays SockJS's HTTP requests: the pool, the edges, the limits."""

    pool: aiohttp.ClientSession
    edges: EdgeDirectory
    allowed_origins: tuple[str, ...]
    max_body: int
    timeout: aiohttp.ClientTimeout

    async def relay(self, request: Request, *, forwarded_for: str) -> Response:
        if not origin_allowed(
            request.headers.get("origin"), self.allowed_origins, request.headers.get("host")
        ):
            return problem_response(
                403,
                title="Forbidden",
                detail="this Origin may not open a SockJS session here",
                code="ORIGIN_NOT_ALLOWED",
            )
        body = await read_body(request, self.max_body)
        return await forward(
            self.pool,
            self.edges.for_session(session_of(request.url.path)),
            "ws-edge",
            request,
            body,
            forwarded_for=forwarded_for,
            exchange_timeout=self.timeout,
            drop_request=_DROP_REQUEST,
            drop_response=_DROP_RESPONSE,
        )


@contextlib.asynccontextmanager
async def sockjs_relay(settings: Settings) -> AsyncIterator[SockJSRelay]:
    """The relay of ``settings``: its pool open and its edge directory kept, for the app's life."""
    connect = settings.upstream_connect_timeout_seconds
    edges = EdgeDirectory(
        edge_http_url(settings.ws_edge_url),
        settings.sockjs_edges,
        settings.sockjs_edges_dns,
        refresh_seconds=settings.sockjs_edges_refresh_seconds,
    )
    async with upstream_client(
        timeout_seconds=connect * 5,  # replaced per exchange (below)
        connect_timeout_seconds=connect,
        max_connections=settings.sockjs_max_connections,
    ) as pool:
        await edges.start()
        try:
            yield SockJSRelay(
                pool,
                edges,
                settings.allowed_origins,
                settings.sockjs_max_send_bytes,
                aiohttp.ClientTimeout(
                    total=None,
                    connect=connect * 5,  # a free connection of the pool, included
                    sock_connect=connect,
                    sock_read=settings.sockjs_read_timeout_seconds,
                ),
            )
        finally:
            await edges.stop()
