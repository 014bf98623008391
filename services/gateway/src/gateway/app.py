"""Wiring of the gateway: ``create_app(settings)``; the one public URL of the chat backend."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast

import httpx
from chat_common.errors import AuthenticationFailed, NotFound
from chat_common.jwt_verify import TokenPolicy, TokenVerifier, UserTokenVerifier, key_source
from chat_common.observability import RequestContextMiddleware
from chat_common.web import (
    EXCEPTION_HANDLERS,
    ReadinessCheck,
    bearer_token,
    operational_routes,
    read_body,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from .proxy import forward
from .routing import Caller, Upstream, rule_for
from .settings import Settings
from .wsproxy import relay

SERVICE = "gateway"


@dataclass(frozen=True, slots=True)
class AppState:
    http: httpx.AsyncClient
    users: UserTokenVerifier
    flairbit_tokens: TokenVerifier
    upstreams: dict[Upstream, str]
    max_body: int
    ws_edge_url: str
    allowed_origins: tuple[str, ...]


def _state(request: Request) -> AppState:
    return cast(AppState, request.state.app)


async def api(request: Request) -> Response:
    state = _state(request)
    rule = rule_for(request.url.path)
    if rule is None:
        raise NotFound(f"no route for {request.url.path}")
    # Verified here so that bad tokens never reach a service; each service verifies again.
    if rule.caller is Caller.FLAIRBIT:
        claims = await state.flairbit_tokens.verify_async(bearer_token(request))
        if claims.subject != "flairbit":
            raise AuthenticationFailed("not a FlairBit service token", code="TOKEN_INVALID")
    else:
        await state.users.identify(bearer_token(request))
    body = await read_body(request, state.max_body)
    upstream = rule.upstream
    return await forward(state.http, state.upstreams[upstream], upstream.value, request, body)


async def websocket_endpoint(websocket: WebSocket) -> None:
    state = cast(AppState, websocket.state.app)
    await relay(websocket, state.ws_edge_url, state.allowed_origins)


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AppState]]:
        timeout = httpx.Timeout(
            settings.upstream_timeout_seconds, connect=settings.upstream_connect_timeout_seconds
        )
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
            keys = key_source(
                pem_file=settings.jwt_public_key_file, jwks_url=settings.jwt_jwks_url, client=http
            )
            policy = TokenPolicy(
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                leeway_seconds=settings.jwt_leeway_seconds,
            )
            flairbit_policy = TokenPolicy(
                issuer=settings.flairbit_service_issuer,
                audience=settings.flairbit_service_audience,
                leeway_seconds=settings.jwt_leeway_seconds,
            )
            yield {
                "app": AppState(
                    http=http,
                    users=UserTokenVerifier(TokenVerifier(keys, policy)),
                    flairbit_tokens=TokenVerifier(keys, flairbit_policy),
                    upstreams={
                        Upstream.SESSION: settings.session_svc_url,
                        Upstream.MESSAGE: settings.message_svc_url,
                    },
                    max_body=settings.max_body_bytes,
                    ws_edge_url=settings.ws_edge_url,
                    allowed_origins=settings.allowed_origins,
                )
            }

    def checks(request: Request) -> Sequence[ReadinessCheck]:
        state = _state(request)

        def probe(base: str) -> ReadinessCheck:
            async def check() -> None:
                (
                    await state.http.get(base.rstrip("/") + "/healthz", timeout=1.0)
                ).raise_for_status()

            return (base, check)

        return [probe(url) for url in state.upstreams.values()]

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            *operational_routes(checks),
            Route("/api/{path:path}", api, methods=methods),
            Route("/internal/flairbit/{path:path}", api, methods=methods),
            WebSocketRoute("/ws", websocket_endpoint),
        ],
        middleware=[Middleware(RequestContextMiddleware, service=SERVICE)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
