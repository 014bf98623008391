"""What the gateway refuses before any upstream sees it: oversize headers, floods per IP and
per user, and too many WebSocket attempts. The buckets' store failing (Redis down) refuses
too, with 503 and ``Retry-After``: requests are never let through unmetered."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from chat_common.errors import DependencyUnavailable, RateLimited
from chat_common.problems import error_response, problem_response
from chat_common.ratelimit import Buckets

from .address import client_ip

__all__ = ["EdgeLimitsMiddleware", "Limiters", "check", "client_ip"]


@dataclass(frozen=True, slots=True)
class Limiters:
    per_ip: Buckets
    per_user: Buckets
    ws_per_user: Buckets
    init_per_user: Buckets


async def check(buckets: Buckets, key: str, what: str) -> None:
    """Raise :class:`RateLimited` when ``key`` has no token left (and
    :class:`DependencyUnavailable` when the store cannot be asked)."""
    allowed, wait = await buckets.take(key)
    if not allowed:
        raise RateLimited(f"too many {what}; slow down", retry_after=wait, code="RATE_LIMITED")


class EdgeLimitsMiddleware:
    """Refuses requests whose headers are too large (431) and floods from one IP (429),
    for HTTP and WebSocket alike, before routing."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_ip: Buckets,
        max_header_bytes: int,
        trust_forwarded_for: bool,
        exempt: tuple[str, ...] = ("/healthz", "/readyz", "/metrics"),
    ) -> None:
        self.app = app
        self.per_ip = per_ip
        self.max_header_bytes = max_header_bytes
        self.trust_forwarded_for = trust_forwarded_for
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        size = sum(len(k) + len(v) + 4 for k, v in scope["headers"])
        if size > self.max_header_bytes:
            await refuse(
                scope,
                receive,
                send,
                problem_response(
                    431,
                    title="Request header fields too large",
                    detail=f"headers are {size} bytes; the limit is {self.max_header_bytes}",
                    code="HEADERS_TOO_LARGE",
                ),
            )
            return
        try:
            await check(
                self.per_ip,
                client_ip(scope, self.trust_forwarded_for),
                "requests from your address",
            )
        except (RateLimited, DependencyUnavailable) as exc:
            await refuse(scope, receive, send, error_response(exc))
            return
        await self.app(scope, receive, send)


async def refuse(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    """Answer ``response`` to an HTTP request, or as the refusal of a WebSocket handshake
    (a plain close, 403, where the server cannot send a denial response)."""
    if scope["type"] == "websocket":
        websocket = WebSocket(scope, receive, send)
        if "websocket.http.response" in scope.get("extensions", {}):
            await websocket.send_denial_response(response)
        else:
            await websocket.close(code=1008)
        return
    await response(scope, receive, send)
