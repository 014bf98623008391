"""The demo web client: its page and files under ``/``, and the development token route.

``/`` answers ``static/index.html`` and ``/static/*`` the client's scripts, styles and the
vendored @stomp/stompjs and sockjs-client bundles (with their licences), all under a
Content-Security-Policy that allows scripts, styles and connections to this origin only (plus
WebSockets to this host). SockJS, the page's fallback where WebSockets fail, needs nothing more:
the client allows it only its WebSocket and XHR transports to this origin, never the iframe
and JSONP ones (they need frames, or run scripts written by the server).
``POST /dev/token`` exists only when ``DEV_TOKEN_URL`` is set: it forwards ``{"email"}`` to the
FlairBit stand-in, so that a page on this origin can sign in during development.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from chat_common.dto import Email
from chat_common.dto import Request as RequestBody
from chat_common.errors import DependencyUnavailable
from chat_common.web import json_response, parse_body

STATIC_DIR = Path(__file__).resolve().parent / "static"

# A Host header we are willing to repeat inside the policy: a name or an IP, and a port.
_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")

_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
}


def content_security_policy(host: str | None) -> str:
    """Everything from this origin only; ``connect-src`` names ws(s) to this host explicitly
    because browsers before CSP 3 do not count a WebSocket to the page's host as 'self'."""
    connect = ["'self'"]
    if host and _HOST.fullmatch(host):
        connect += [f"ws://{host}", f"wss://{host}"]
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src " + " ".join(connect),
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def _client_headers(scope: Scope) -> dict[str, str]:
    host = None
    for name, value in scope.get("headers", []):
        if name == b"host":
            host = value.decode("latin-1")
            break
    return {
        "content-security-policy": content_security_policy(host),
        # Revalidate (ETag / Last-Modified) so that a new release is picked up at once.
        "cache-control": "no-cache",
    }


class ClientFiles(StaticFiles):
    """StaticFiles with fixed media types (not the host's mime.types) and the client's CSP."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            media_type = _MEDIA_TYPES.get(os.path.splitext(path)[1].lower())
            if media_type is not None and response.status_code == 200:
                response.headers["content-type"] = media_type
            response.headers.update(_client_headers(scope))
        return response


async def index(request: Request) -> Response:
    page = (STATIC_DIR / "index.html").read_bytes()
    return Response(
        page, media_type="text/html; charset=utf-8", headers=_client_headers(request.scope)
    )


class DevTokenRequest(RequestBody, frozen=True):
    email: Email


def dev_token_route(url: str, http_of: Callable[[Request], httpx.AsyncClient]) -> Route:
    """``POST /dev/token {"email"}`` -> ``{"token"}`` from the development issuer at ``url``."""

    async def dev_token(request: Request) -> Response:
        body = await parse_body(request, DevTokenRequest, max_bytes=4096)
        try:
            answer = await http_of(request).post(url, json={"email": body.email}, timeout=5.0)
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(
                f"the development token issuer is unreachable: {type(exc).__name__}"
            ) from None
        no_store = {"cache-control": "no-store"}
        if answer.status_code == 200:
            try:
                token = answer.json().get("token")
            except (ValueError, AttributeError):
                token = None
            if isinstance(token, str):
                return json_response({"token": token}, headers=no_store)
        if 400 <= answer.status_code < 500:
            return Response(
                answer.content,
                status_code=answer.status_code,
                media_type=answer.headers.get("content-type", "application/problem+json"),
                headers=no_store,
            )
        raise DependencyUnavailable(f"the development token issuer answered {answer.status_code}")

    return Route("/dev/token", dev_token, methods=["POST"])


def routes(
    dev_token_url: str | None, http_of: Callable[[Request], httpx.AsyncClient]
) -> list[BaseRoute]:
    """The client's routes; ``/dev/token`` only when a development issuer is configured."""
    found: list[BaseRoute] = [
        Route("/", index, methods=["GET"]),
        Mount("/static", app=ClientFiles(directory=STATIC_DIR), name="static"),
    ]
    if dev_token_url:
        found.append(dev_token_route(dev_token_url, http_of))
    return found
