"""Wiring of the gateway: ``create_app(settings)``; the one public URL of the chat backend."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast

import aiohttp
import httpx
from prometheus_client import Counter
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from chat_common import routing, tracing
from chat_common.errors import AuthenticationFailed, ChatError, NotFound
from chat_common.handshake import handshake_token
from chat_common.jwt_verify import TokenVerifier, UserTokenVerifier, verifiers
from chat_common.observability import RequestContextMiddleware, request_id_var
from chat_common.problems import error_response
from chat_common.ratelimit import (
    BucketPolicy,
    Buckets,
    FallbackBuckets,
    MemoryBuckets,
    RedisBuckets,
)
from chat_common.redis_client import redis_client
from chat_common.web import (
    EXCEPTION_HANDLERS,
    ReadinessCheck,
    bearer_token,
    declared_json,
    operational_routes,
    read_body,
)

from .address import client_ip
from .apidoc import ApiDocument, StompDocument, render, stomp_document
from .headers import SecurityHeadersMiddleware
from .limits import EdgeLimitsMiddleware, Limiters, check
from .proxy import forward, upstream_client
from .routing import Caller, Upstream, rule_for
from .sends import GroupedSends, json_document
from .settings import Settings
from .sockjs import SockJSRelay, sockjs_relay
from .webclient import routes as web_client_routes
from .wsproxy import deny, relay

SERVICE = "gateway"


@dataclass(frozen=True, slots=True)
class AppState:
    http: httpx.AsyncClient  # JWKS, the API document, probes, the dev token page
    pools: dict[Upstream, aiohttp.ClientSession]  # forwarding of every API call, one pool each
    sends: GroupedSends | None  # POST /api/chat/message, grouped (None: forwarded one by one)
    users: UserTokenVerifier
    flairbit_tokens: TokenVerifier
    limiters: Limiters
    upstreams: dict[Upstream, str]
    max_body: int
    bulk_max_body: int
    ws_edge_url: str
    sockjs: SockJSRelay  # SockJS's HTTP transports to the edges (gateway.sockjs)
    allowed_origins: tuple[str, ...]
    trust_forwarded_for: bool
    api_document: ApiDocument
    stomp_document: StompDocument  # /asyncapi.json, read once at start


def _state(request: Request | WebSocket) -> AppState:
    return cast(AppState, request.state.app)


INIT_PATH = "/api/chat/init"
SEND_PATH = "/api/chat/message"


async def api(request: Request) -> Response:
    state = _state(request)
    rule = rule_for(request.url.path)
    if rule is None:
        raise NotFound(f"no route for {request.url.path}")
    token: str | None = None  # a user's
    # Verified here so that bad tokens never reach a service; each service verifies again.
    if rule.caller is Caller.FLAIRBIT:
        claims = await state.flairbit_tokens.verify_async(bearer_token(request))
        if claims.subject != "flairbit":
            raise AuthenticationFailed("not a FlairBit service token", code="TOKEN_INVALID")
    else:
        token = bearer_token(request)
        user = await state.users.identify(token)
        # buckets by the user key (a hash), never the email: Redis holds no address, also
        # when a deleted user's still valid token comes by after the erasure
        await check(state.limiters.per_user, routing.user_key(user.email), "requests")
        if request.method == "POST" and request.url.path == INIT_PATH:
            await check(state.limiters.init_per_user, routing.user_key(user.email), "new chats")
    body = await read_body(request, state.bulk_max_body if rule.bulk else state.max_body)
    if (
        token is not None
        and state.sends is not None
        and request.method == "POST"
        and request.url.path == SEND_PATH
        and declared_json(request)  # as message-svc reads it
        and (document := json_document(body)) is not None
    ):
        return await state.sends.send(token, document, request_id_var.get())
    upstream = rule.upstream
    return await forward(
        state.pools[upstream],
        state.upstreams[upstream],
        upstream.value,
        request,
        body,
        forwarded_for=client_ip(request.scope, state.trust_forwarded_for),
    )


async def openapi_json(request: Request) -> Response:
    return JSONResponse(await _state(request).api_document.get())


async def asyncapi_json(request: Request) -> Response:
    return Response(_state(request).stomp_document.raw, media_type="application/json")


async def docs(request: Request) -> Response:
    state = _state(request)
    page = render(await state.api_document.get(), state.stomp_document.document)
    return HTMLResponse(
        page, headers={"content-security-policy": "default-src 'none'; style-src 'unsafe-inline'"}
    )


async def websocket_endpoint(websocket: WebSocket) -> None:
    state = _state(websocket)
    token = handshake_token(websocket.headers.get("authorization"), websocket.url.query)
    if token is not None:
        # Connection attempts per user when the handshake names the user; the edge checks
        # the token (also when it only comes in the CONNECT frame) and answers its errors.
        try:
            user = await state.users.identify(token)
            await check(
                state.limiters.ws_per_user, routing.user_key(user.email), "connection attempts"
            )
        except ChatError as exc:
            await deny(websocket, error_response(exc), 1008)
            return
    await relay(
        websocket,
        state.ws_edge_url,
        state.allowed_origins,
        forwarded_for=client_ip(websocket.scope, state.trust_forwarded_for),
    )


async def sockjs_endpoint(request: Request) -> Response:
    state = _state(request)
    forwarded_for = client_ip(request.scope, state.trust_forwarded_for)
    return await state.sockjs.relay(request, forwarded_for=forwarded_for)


LIMITS_DEGRADED = Counter(
    "chat_gateway_limits_degraded_total",
    "Rate-limit checks answered by this instance alone because Redis could not be asked",
    ["limit"],
)


def _buckets(redis: Redis | None, policy: BucketPolicy, name: str) -> Buckets:
    """Shared through Redis when configured; while Redis cannot be asked, this instance's own
    buckets decide (each instance then meters alone: degraded, never unmetered)."""
    if redis is None:
        return MemoryBuckets(policy)
    return FallbackBuckets(
        RedisBuckets(redis, policy, prefix=f"chat:gateway:{name}:"),
        MemoryBuckets(policy),
        LIMITS_DEGRADED.labels(name).inc,
    )


def create_app(settings: Settings) -> Starlette:
    redis = redis_client(settings.redis_url, settings.redis_timeout_seconds)
    per_ip = _buckets(redis, BucketPolicy(settings.ip_burst, settings.ip_rate_per_second), "ip")
    stomp = stomp_document()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AppState]]:
        timeout = httpx.Timeout(
            settings.upstream_timeout_seconds, connect=settings.upstream_connect_timeout_seconds
        )
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
        async with (
            httpx.AsyncClient(timeout=timeout, limits=limits) as http,
            contextlib.AsyncExitStack() as pools_open,
        ):
            pools = {
                upstream: await pools_open.enter_async_context(
                    upstream_client(
                        timeout_seconds=settings.upstream_timeout_seconds,
                        connect_timeout_seconds=settings.upstream_connect_timeout_seconds,
                        max_connections=settings.upstream_max_connections,
                    )
                )
                for upstream in Upstream
            }
            sockjs = await pools_open.enter_async_context(sockjs_relay(settings))
            tracing.trace_client(http)
            tokens = verifiers(
                settings,
                http,
                flairbit_issuer=settings.flairbit_service_issuer,
                flairbit_audience=settings.flairbit_service_audience,
            )
            limiters = Limiters(
                per_ip=per_ip,
                per_user=_buckets(
                    redis, BucketPolicy(settings.user_burst, settings.user_rate_per_second), "user"
                ),
                ws_per_user=_buckets(
                    redis,
                    BucketPolicy(settings.ws_connect_burst, settings.ws_connect_rate_per_second),
                    "ws",
                ),
                init_per_user=_buckets(
                    redis, BucketPolicy(settings.init_burst, settings.init_rate_per_second), "init"
                ),
            )
            try:
                yield {
                    "app": AppState(
                        http=http,
                        pools=pools,
                        sends=GroupedSends(
                            pools[Upstream.MESSAGE],
                            settings.message_svc_url,
                            in_flight=settings.send_requests_in_flight,
                            timeout_seconds=settings.upstream_timeout_seconds,
                        )
                        if settings.send_requests_in_flight > 0
                        else None,
                        users=tokens.users,
                        flairbit_tokens=tokens.flairbit,
                        limiters=limiters,
                        upstreams={
                            Upstream.SESSION: settings.session_svc_url,
                            Upstream.MESSAGE: settings.message_svc_url,
                        },
                        max_body=settings.max_body_bytes,
                        bulk_max_body=settings.bulk_max_body_bytes,
                        ws_edge_url=settings.ws_edge_url,
                        sockjs=sockjs,
                        allowed_origins=settings.allowed_origins,
                        trust_forwarded_for=settings.trust_forwarded_for,
                        api_document=ApiDocument(
                            http, (settings.session_svc_url, settings.message_svc_url)
                        ),
                        stomp_document=stomp,
                    )
                }
            finally:
                if redis is not None:
                    await redis.aclose()

    def checks(request: Request) -> Sequence[ReadinessCheck]:
        state = _state(request)

        def probe(base: str) -> ReadinessCheck:
            async def check_upstream() -> None:
                answer = await state.http.get(base.rstrip("/") + "/healthz", timeout=1.0)
                answer.raise_for_status()

            return (base, check_upstream)

        return [probe(url) for url in state.upstreams.values()]

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            *operational_routes(lambda request: (), dependencies=checks),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/asyncapi.json", asyncapi_json, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
            Route("/api/{path:path}", api, methods=methods),
            Route("/internal/flairbit/{path:path}", api, methods=methods),
            WebSocketRoute("/ws", websocket_endpoint),
            WebSocketRoute("/ws/{server}/{session}/websocket", websocket_endpoint),
            Route("/ws/{path:path}", sockjs_endpoint, methods=["GET", "POST", "OPTIONS"]),
            *web_client_routes(settings.dev_token_url, lambda request: _state(request).http),
        ],
        middleware=[
            *tracing.middleware(),
            Middleware(RequestContextMiddleware, service=SERVICE),
            Middleware(SecurityHeadersMiddleware),
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.allowed_origins),
                allow_methods=methods,
                allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
                expose_headers=["Link", "Retry-After", "X-Request-Id", "Idempotent-Replayed"],
                max_age=600,
            ),
            Middleware(
                EdgeLimitsMiddleware,
                per_ip=per_ip,
                max_header_bytes=settings.max_header_bytes,
                trust_forwarded_for=settings.trust_forwarded_for,
            ),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
