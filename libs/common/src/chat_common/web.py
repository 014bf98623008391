"""Starlette helpers every service uses: typed bodies, bearer tokens, errors as problems,
health, readiness and metrics routes."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from . import errors
from .handshake import bearer
from .observability import loggable_path
from .problems import MalformedBody, error_response, problem_response

log = logging.getLogger(__name__)

T = TypeVar("T")
ReadinessCheck = tuple[str, Callable[[], Awaitable[object]]]

DEFAULT_MAX_BODY = 64 * 1024
_PATH_RE = re.compile(r" - at `\$\.?([^`]*)`$")
_NAMED_FIELD_RE = re.compile(r"^Object (?:contains unknown|missing required) field `([^`]*)`")


def json_response(
    value: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        msgspec.json.encode(value),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def decode_json(body: bytes, type_: type[T]) -> T:
    """Decode and validate ``body``; raise :class:`InvalidInput` naming the offending field."""
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise errors.InvalidInput(message, field=invalid_field(message)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"body is not valid UTF-8 JSON: {exc}") from None
    except RecursionError:  # msgspec gives up on nesting deeper than its stack
        raise MalformedBody("body nests too deeply") from None


def ascii_int(raw: str, low: int, high: int) -> int | None:
    """``raw`` as an integer from ``low`` (at least 0) to ``high`` when it is written with ASCII
    digits only and no longer than ``high`` is; None otherwise. ``str.isdigit`` alone lets
    through digits ``int`` refuses (``²``) or other scripts' digits (``١٢``), and ``int`` refuses
    strings over 4,300 digits: both would be a 500 instead of a 4xx."""
    if not raw or len(raw) > len(str(high)) or not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return value if low <= value <= high else None


def invalid_field(message: str) -> str | None:
    """The field a msgspec validation message is about, as a path from the body's root
    (``content``, ``inner.upToSeq``, ``items[1].zz``); None when it is the whole body.

    msgspec gives the path of the offending value after `` - at `$...` ``; an unknown or a
    missing field is reported at its parent object, with the field's own name in the text."""
    at = _PATH_RE.search(message)
    path = at.group(1) if at else ""
    named = _NAMED_FIELD_RE.match(message)
    if named:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return path or None


async def read_body(request: Request, max_bytes: int = DEFAULT_MAX_BODY) -> bytes:
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and ascii_int(declared, 0, max_bytes) is None  # over the limit, however many digits
    ):
        raise errors.ContentTooLarge(f"request body is over {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise errors.ContentTooLarge(f"request body is over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def declared_json(request: Request) -> bool:
    """Whether the request declares a JSON body (no Content-Type counts as JSON)."""
    content_type = request.headers.get("content-type", "application/json")
    return content_type.split(";")[0].strip().lower().endswith("json")


async def parse_body(request: Request, type_: type[T], max_bytes: int = DEFAULT_MAX_BODY) -> T:
    if not declared_json(request):
        raise MalformedBody("send the body as application/json")
    return decode_json(await read_body(request, max_bytes), type_)


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise errors.AuthenticationFailed("missing Authorization header", code="TOKEN_MISSING")
    token = bearer(header)  # the one parser of the scheme (the WebSocket handshakes' too)
    if token is None:
        raise errors.AuthenticationFailed("use the Bearer scheme", code="TOKEN_INVALID")
    return token


async def chat_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.ChatError)
    return error_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
    return problem_response(
        exc.status_code,
        title=str(exc.detail),
        detail=f"{request.method} {request.url.path}: {exc.detail}",
        code=codes.get(exc.status_code, "HTTP_ERROR"),
        headers=dict(exc.headers) if exc.headers else None,
    )


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, loggable_path(request.url.path))
    return problem_response(
        500, title="Internal error", detail="the server failed to answer", code="INTERNAL"
    )


EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    errors.ChatError: chat_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}


DEPENDENCY_UP = Gauge(
    "chat_dependency_up",
    "Whether a shared dependency answered this instance's last readiness probe (1) or not (0)",
    ["dependency"],
)


def operational_routes(
    checks: Callable[[Request], Sequence[ReadinessCheck]],
    timeout: float = 2.0,
    *,
    dependencies: Callable[[Request], Sequence[ReadinessCheck]] | None = None,
) -> list[BaseRoute]:
    """``/healthz`` (alive), ``/readyz`` and ``/metrics``.

    ``/readyz`` is 503 only when one of ``checks`` fails: what this instance itself cannot do.
    ``dependencies`` are the shared ones (the database, the broker, Redis, upstream services):
    one that fails is down for every instance alike, and taking them all out of their Service
    would turn each request's clear 503 into the load balancer's blanket one; so it is reported
    (``"status": "degraded"``, and ``chat_dependency_up``) with 200."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def probe(found: Sequence[ReadinessCheck]) -> dict[str, str]:
        failed: dict[str, str] = {}
        for name, check in found:
            try:
                await asyncio.wait_for(check(), timeout)
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"[:200]
        return failed

    async def readyz(request: Request) -> Response:
        failed = await probe(checks(request))
        if failed:
            return problem_response(
                503,
                title="Not ready",
                detail="; ".join(f"{k}: {v}" for k, v in failed.items()),
                code="NOT_READY",
            )
        shared = dependencies(request) if dependencies is not None else ()
        down = await probe(shared)
        for name, _ in shared:
            DEPENDENCY_UP.labels(name).set(0 if name in down else 1)
        if down:
            return JSONResponse({"status": "degraded", "dependencies": down})
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
