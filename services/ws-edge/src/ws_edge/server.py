"""The WebSocket server: STOMP at ``/ws`` (subprotocols v12/v11/v10.stomp), SockJS under
``/ws/`` (its ``websocket`` transport here, its HTTP transports in :mod:`ws_edge.sockjs_http`,
on the same port: :mod:`ws_edge.ports`), the Origin check, plain HTTP ``/healthz``, ``/readyz``
and ``/metrics``, and a graceful stop (stop accepting, close every client with 1012, drain,
drop the queue and its bindings).

A WebSocket message larger than the frame limit is never buffered: the websockets library
refuses it from its length, and the edge then sends a STOMP ERROR (``frame too large``) right
before the close frame (1009), so STOMP clients learn why they were dropped."""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import math
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
from aiohttp import web
from chat_stomp.frames import error_frame, serialize
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.exceptions import ProtocolError as WebSocketProtocolError
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from chat_common import tracing
from chat_common.erased import ErasedUsers
from chat_common.errors import DependencyUnavailable
from chat_common.handshake import client_address, handshake_token, origin_allowed
from chat_common.jwt_verify import verifiers
from chat_common.keepalive import KEEP_ALIVE_SECONDS
from chat_common.presence_store import MemoryPresence, PresenceStore, RedisPresence
from chat_common.ratelimit import BucketPolicy, Buckets, MemoryBuckets, RedisBuckets
from chat_common.redis_client import redis_client

from . import sockjs
from .broker import RabbitBroker
from .client import ClientSession
from .disconnect import Disconnect
from .edge import Edge
from .links import SockJSWebSocket
from .metrics import SOCKJS_SESSIONS
from .ports import sharing
from .presence import EdgePresence, keep
from .seats import MemorySeats, RedisSeats, Seats
from .sender import Sender
from .settings import Settings
from .sockjs_http import HttpSession, Limits, SockJSApp
from .upstream import Upstream

log = logging.getLogger(__name__)

SUBPROTOCOLS = [Subprotocol(p) for p in ("v12.stomp", "v11.stomp", "v10.stomp")]
WS_PATH = "/ws"

# The websockets library logs request lines and headers at DEBUG (an access_token query
# parameter, an Authorization header): its logger stays at WARNING whatever LOG_LEVEL says.
_socket_log = logging.getLogger("ws_edge.websockets")
_socket_log.setLevel(logging.WARNING)


def _plain(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)


TOO_LARGE = "frame too large"


def too_large_error(limit: int | None) -> bytes:
    """The STOMP ERROR sent before closing on a message over ``limit`` bytes (written as
    before CONNECTED: the socket layer does not know the STOMP version, and it needs no
    escaping)."""
    detail = f"a WebSocket message may carry at most {limit} bytes" if limit else ""
    return serialize(error_frame(TOO_LARGE, body=detail.encode()), None)


class EdgeSocket(ServerConnection):
    """The edge's WebSocket connection: before the library fails a message over ``max_size``
    (close code 1009), it queues a STOMP ERROR frame saying so, in front of the close frame.

    The library checks the size in its sans-I/O protocol as soon as a frame header announces
    the length, and fails the connection there (close frame, then end of stream) before the
    application sees anything; hooking that failure is the only point where a data frame can
    still go out first. The hook wraps ``fail``, a public method of the library's sans-I/O
    protocol, on this connection's own instance; that the library calls it for an oversized
    frame (and a fragmented message) is an assumption about its internals, pinned by
    ``tests/test_server_frame_limit.py``, which fails if a new release stops doing so.
    """

    def __init__(self, protocol: ServerProtocol, server: Server, **kwargs: Any) -> None:
        super().__init__(protocol, server, **kwargs)
        fail = protocol.fail
        error = too_large_error(protocol.max_message_size)

        def fail_telling_why(code: CloseCode | int, reason: str = "") -> None:
            if code == CloseCode.MESSAGE_TOO_BIG:
                # Not possible once closing, or in the middle of a fragmented message.
                with contextlib.suppress(InvalidState, WebSocketProtocolError):
                    protocol.send_text(error)
            fail(code, reason)

        protocol.fail = fail_telling_why  # type: ignore[method-assign]

    # -- what a STOMP connection needs of its link (ws_edge.links.Link) ----------------------

    def outlet(self, max_bytes: int, slow_close_seconds: float) -> Sender:
        return Sender(self, max_bytes, slow_close_seconds)

    def abort(self) -> None:
        self.transport.abort()


def select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """The newest STOMP version both sides speak; a client offering none gets none (and
    negotiates its version in CONNECT, as stomp.py does)."""
    for protocol in SUBPROTOCOLS:
        if protocol in offered:
            return protocol
    return None


class EdgeServer:
    def __init__(self, settings: Settings, edge: Edge, attempts: Buckets | None = None) -> None:
        self.settings = settings
        self.edge = edge
        # WebSocket handshakes per client address (None: not limited here)
        self._attempts = attempts

    @property
    def ready(self) -> bool:
        return self.edge.accepting and self.edge.broker.connected

    def operational(self, path: str) -> tuple[http.HTTPStatus, bytes, str] | None:
        """``/healthz``, ``/readyz`` and ``/metrics`` (status, body, content type), served
        by either server of the port (``ws_edge.ports``); None for any other path."""
        if path == "/healthz":
            return http.HTTPStatus.OK, b'{"status":"ok"}', "application/json"
        if path == "/readyz":
            if self.ready:
                return http.HTTPStatus.OK, b'{"status":"ready"}', "application/json"
            detail = b"shutting down" if not self.edge.accepting else b"RabbitMQ is not connected"
            body = b'{"status":"not ready","detail":"' + detail + b'"}'
            return http.HTTPStatus.SERVICE_UNAVAILABLE, body, "application/json"
        if path == "/metrics":
            return http.HTTPStatus.OK, generate_latest(), CONTENT_TYPE_LATEST
        return None

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = urlsplit(request.path).path
        answer = self.operational(path)
        if answer is not None:
            return _plain(*answer)
        if path != WS_PATH and not _sockjs_websocket(path):
            return _plain(http.HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        headers = request.headers
        if not origin_allowed(
            headers.get("Origin"), self.settings.allowed_origins, headers.get("Host")
        ):
            return _plain(http.HTTPStatus.FORBIDDEN, b"origin not allowed", "text/plain")
        if not self.ready:
            return _plain(http.HTTPStatus.SERVICE_UNAVAILABLE, b"not ready", "text/plain")
        peer = connection.remote_address[0] if connection.remote_address else None
        wait = await self._metered(self._address(peer, headers.get("X-Forwarded-For")))
        if wait is None:
            return None
        response = _plain(
            http.HTTPStatus.TOO_MANY_REQUESTS, b"too many connection attempts", "text/plain"
        )
        response.headers["Retry-After"] = str(wait)
        return response

    def _address(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address: the TCP peer, or the first hop of X-Forwarded-For with
        TRUST_FORWARDED_FOR."""
        return client_address(peer, forwarded_for, self.settings.trust_forwarded_for)

    def request_address(self, request: web.Request) -> str:
        """The client's address of a SockJS request (what binds a session to its client)."""
        return self._address(request.remote, request.headers.get("X-Forwarded-For"))

    async def _metered(self, address: str) -> int | None:
        """Seconds to wait, past the handshakes allowed per client ``address``; None: go ahead.
        A limit store that cannot be asked (Redis down) lets the handshake through: the
        connection still needs a valid token."""
        if self._attempts is None:
            return None
        try:
            allowed, wait = await self._attempts.take(address)
        except DependencyUnavailable as exc:
            log.warning("handshake not metered (%s)", exc.detail)
            return None
        return None if allowed else max(1, math.ceil(wait))

    async def admit(self, request: web.Request) -> web.Response | None:
        """A new SockJS session over HTTP: refused like a WebSocket handshake (the Origin is
        checked for every SockJS request)."""
        if not self.ready:
            return web.Response(status=503, text="not ready")
        wait = await self._metered(self.request_address(request))
        if wait is None:
            return None
        return web.Response(
            status=429, text="too many connection attempts", headers={"Retry-After": str(wait)}
        )

    async def handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        target = urlsplit(request.path)
        token = handshake_token(request.headers.get("Authorization"), target.query)
        if target.path == WS_PATH:
            assert isinstance(connection, EdgeSocket)
            await ClientSession(self.edge, connection, token).run()
            return
        link = SockJSWebSocket(connection)
        SOCKJS_SESSIONS.labels(sockjs.Transport.WEBSOCKET.value).inc()
        await link.opened()
        await ClientSession(self.edge, link, token).run()

    async def run_sockjs(self, session: HttpSession, token: str | None) -> None:
        """A SockJS session over HTTP, as a STOMP connection."""
        await ClientSession(self.edge, session, token).run()

    async def shutdown(self, server: Server) -> None:
        """Stop accepting, tell every client to reconnect elsewhere (1012), wait for them to
        go (drop the stragglers after the grace period), post the last marks."""
        grace = self.settings.shutdown_grace_seconds
        self.edge.accepting = False
        server.close(close_connections=False)
        self.edge.disconnect_all(Disconnect.SHUTDOWN)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while self.edge.clients:  # noqa: ASYNC110 - they leave one by one
                    await asyncio.sleep(0.02)
        for client in list(self.edge.clients.values()):
            client.abort()
        await self.edge.drain(grace)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await server.wait_closed()


@dataclass(frozen=True)
class Running:
    edge_server: EdgeServer
    server: Server
    broker: RabbitBroker

    @property
    def edge(self) -> Edge:
        return self.edge_server.edge


def _sockjs_websocket(path: str) -> bool:
    found = sockjs.route(path, WS_PATH)
    return isinstance(found, sockjs.SessionRoute) and found.transport is sockjs.Transport.WEBSOCKET


def _sockjs_app(settings: Settings, edge_server: EdgeServer) -> web.Application:
    limits = Limits(
        max_outbound_bytes=settings.max_outbound_bytes,
        max_send_bytes=settings.sockjs_max_send_bytes,
        disconnect_delay=settings.sockjs_disconnect_delay_seconds,
        stream_limit=settings.sockjs_stream_limit_bytes,
        heartbeat_seconds=settings.sockjs_heartbeat_seconds,
    )
    sockjs_app = SockJSApp(
        WS_PATH,
        limits,
        settings.allowed_origins,
        edge_server.admit,
        edge_server.run_sockjs,
        operational=edge_server.operational,
        address=edge_server.request_address,
    )
    return sockjs_app.application()


def _send_client(settings: Settings) -> aiohttp.ClientSession:
    """message-svc's pool for SENDs: keep-alive, no cookies, bounded like the httpx one."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=200, limit_per_host=200),
        timeout=aiohttp.ClientTimeout(total=settings.upstream_timeout_seconds, sock_connect=1.0),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent",),
    )


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    """The edge and its server, listening; shut down gracefully on exit."""
    async with (
        httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_timeout_seconds, connect=1.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        ) as http_client,
        _send_client(settings) as send_client,
    ):
        tracing.trace_client(http_client)
        upstream = Upstream(
            http_client,
            settings.session_svc_url,
            settings.message_svc_url,
            yes_seconds=settings.membership_cache_seconds,
            no_seconds=settings.membership_cache_negative_seconds,
            max_entries=settings.membership_cache_entries,
            send_client=send_client,
            sends_in_flight=settings.send_requests_in_flight,
            send_timeout_seconds=settings.upstream_timeout_seconds,
        )
        broker = RabbitBroker(
            settings.amqp_url,
            settings.instance_id,
            send_queue=settings.send_queue,
            prefetch=settings.amqp_prefetch,
            ack_batch=settings.ack_batch,
            ack_delay=settings.ack_delay_seconds,
        )
        redis = redis_client(settings.redis_url, settings.redis_timeout_seconds)
        seats: Seats = (
            MemorySeats(settings.max_connections_per_user)
            if redis is None
            else RedisSeats(
                redis, settings.max_connections_per_user, settings.connection_lease_seconds
            )
        )
        store: PresenceStore = (
            MemoryPresence(settings.presence_lease_seconds, settings.presence_grace_seconds)
            if redis is None
            else RedisPresence(
                redis,
                settings.presence_lease_seconds,
                settings.presence_grace_seconds,
                prefix=settings.presence_key_prefix,
            )
        )
        presence = EdgePresence(store, broker, upstream)
        erased = None if redis is None else ErasedUsers(redis)  # reads only
        edge = Edge(
            settings,
            broker,
            upstream,
            verifiers(settings, http_client).users,
            seats,
            presence,
            erased,
        )
        await broker.start(
            edge.on_event, on_lost=edge.broker_lost, on_restored=edge.broker_restored
        )
        edge_server = EdgeServer(settings, edge, _attempts(settings, redis))
        runner = web.AppRunner(
            _sockjs_app(settings, edge_server),
            handle_signals=False,
            access_log=None,
            handler_cancellation=True,  # a client gone from a long poll frees its session
            keepalive_timeout=KEEP_ALIVE_SECONDS,  # as every service's uvicorn (aiohttp: 3630 s)
        )
        await runner.setup()
        assert runner.server is not None
        renewing = asyncio.create_task(_renew_seats(edge, settings.connection_lease_seconds / 3))
        presence_upkeep = asyncio.create_task(
            keep(presence, settings.presence_lease_seconds / 3, settings.presence_sweep_seconds)
        )
        try:
            async with serve(
                edge_server.handle,
                settings.host,
                settings.port,
                process_request=edge_server.process_request,
                select_subprotocol=select_subprotocol,
                create_connection=sharing(EdgeSocket, runner.server, WS_PATH),
                max_size=settings.max_frame_bytes,
                max_queue=16,
                ping_interval=settings.ws_ping_interval_seconds or None,
                ping_timeout=20,
                close_timeout=5,
                compression=None,
                server_header=None,
                logger=_socket_log,
            ) as server:
                try:
                    yield Running(edge_server, server, broker)
                finally:
                    await edge_server.shutdown(server)
                    await runner.cleanup()
        finally:
            renewing.cancel()
            presence_upkeep.cancel()
            await broker.close()  # the exclusive queue and its bindings go with the connection
            if redis is not None:
                await redis.aclose()


def _attempts(settings: Settings, redis: Redis | None) -> Buckets | None:
    """Handshakes per client address, shared through Redis when there is one."""
    if settings.connect_ip_burst <= 0:
        return None
    policy = BucketPolicy(settings.connect_ip_burst, settings.connect_ip_rate_per_second)
    if redis is None:
        return MemoryBuckets(policy)
    return RedisBuckets(redis, policy, prefix="chat:ws-edge:ip:")


async def _renew_seats(edge: Edge, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await edge.seats.renew(edge.seats_held())
        except Exception:
            log.exception("renewing the connection seats failed")


async def main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running(settings):
        log.info(
            "ws-edge %s listening on %s:%s", settings.instance_id, settings.host, settings.port
        )
        await stop.wait()
        log.info("ws-edge stopping: closing clients with 1012")
    log.info("ws-edge stopped")
