"""The WebSocket server: STOMP at ``/ws`` (subprotocols v12/v11/v10.stomp), the Origin check,
``/healthz``, ``/readyz`` and ``/metrics`` on the same port, and a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import signal
from collections.abc import AsyncIterator, Sequence
from urllib.parse import parse_qs, urlsplit

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from chat_common import tracing
from chat_common.jwt_verify import TokenPolicy, TokenVerifier, UserTokenVerifier, key_source

from .broker import RabbitBroker
from .client import ClientSession
from .edge import Edge
from .settings import Settings
from .upstream import Upstream

log = logging.getLogger(__name__)

SUBPROTOCOLS = [Subprotocol(p) for p in ("v12.stomp", "v11.stomp", "v10.stomp")]


def _plain(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """The best STOMP version both sides speak; a client offering none gets none."""
    for protocol in SUBPROTOCOLS:
        if protocol in offered:
            return protocol
    return None


class EdgeServer:
    def __init__(self, settings: Settings, edge: Edge, broker: RabbitBroker) -> None:
        self.settings = settings
        self.edge = edge
        self.broker = broker

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            return _plain(http.HTTPStatus.OK, b'{"status":"ok"}', "application/json")
        if path == "/readyz":
            if self.broker.connected:
                return _plain(http.HTTPStatus.OK, b'{"status":"ready"}', "application/json")
            return _plain(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                b'{"status":"not ready","detail":"RabbitMQ is not connected"}',
                "application/json",
            )
        if path == "/metrics":
            return _plain(http.HTTPStatus.OK, generate_latest(), CONTENT_TYPE_LATEST)
        if path != "/ws":
            return _plain(http.HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        origin = request.headers.get("Origin")
        allowed = self.settings.allowed_origins
        if origin is not None and "*" not in allowed and origin not in allowed:
            return _plain(http.HTTPStatus.FORBIDDEN, b"origin not allowed", "text/plain")
        return None

    async def handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        query = parse_qs(urlsplit(request.path).query)
        token = next(iter(query.get("access_token", [])), None)
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            token = header[7:].strip() or token
        await ClientSession(self.edge, connection, token).run()

    async def shutdown(self, server: Server) -> None:
        """Stop accepting, tell every client to reconnect elsewhere (1012), drain, unbind."""
        server.close(close_connections=False)
        for client in list(self.edge.clients.values()):
            client.shutdown()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.shutdown_grace_seconds):
                while self.edge.clients:  # noqa: ASYNC110 - clients leave one by one
                    await asyncio.sleep(0.05)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[EdgeServer, Server]]:
    """The edge and its server, listening; everything closed on exit."""
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(5.0, connect=1.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    ) as http_client:
        tracing.trace_client(http_client)
        keys = key_source(
            pem_file=settings.jwt_public_key_file,
            jwks_url=settings.jwt_jwks_url,
            client=http_client,
        )
        policy = TokenPolicy(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_seconds=settings.jwt_leeway_seconds,
        )
        upstream = Upstream(
            http_client,
            settings.session_svc_url,
            settings.message_svc_url,
            yes_seconds=settings.membership_cache_seconds,
            no_seconds=settings.membership_cache_negative_seconds,
        )
        edge_holder: list[Edge] = []

        async def on_event(key: str, headers: object, body: bytes) -> None:
            await edge_holder[0].on_event(key, headers, body)  # type: ignore[arg-type]

        broker = RabbitBroker(settings.amqp_url, settings.instance_id, on_event)
        edge = Edge(settings, broker, upstream, UserTokenVerifier(TokenVerifier(keys, policy)))
        edge_holder.append(edge)
        await broker.start()
        edge_server = EdgeServer(settings, edge, broker)
        try:
            async with serve(
                edge_server.handle,
                settings.host,
                settings.port,
                process_request=edge_server.process_request,
                select_subprotocol=_select_subprotocol,
                max_size=settings.max_frame_bytes,
                max_queue=16,
                ping_interval=20,
                ping_timeout=20,
                compression=None,
                server_header=None,
            ) as server:
                yield edge_server, server
                await edge_server.shutdown(server)
        finally:
            await broker.close()


async def main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running(settings):
        log.info("ws-edge listening on %s:%s", settings.host, settings.port)
        await stop.wait()
    log.info("ws-edge stopped")
