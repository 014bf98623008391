"""JSON logs, request ids and HTTP metrics, shared by every service.

A log line written inside a span carries its ``trace_id`` and ``span_id`` (W3C hex, as trace
back ends show them), so logs and traces of one request or message can be joined. Tokens never
reach a log: the access line has the path without its query string, uvicorn's own WebSocket
lines (which carry the query string) are dropped, and an ``access_token=`` or ``passcode=``
anywhere in a message is redacted. Nor do SockJS session ids: whoever holds one can poll that
session's frames and post into it, so an access line names it by a digest instead (keyed per
process: one process's lines of a session still match, and the digest leads back to nothing).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import re
import secrets
import sys
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

HTTP_REQUESTS = Counter(
    "chat_http_requests_total", "HTTP requests answered", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "chat_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

_SECRET_PARAMETER = re.compile(r"(?i)\b(access_token|passcode)=[^&\s\"'#]+")


def redact(text: str) -> str:
    """``text`` with the values of ``access_token=`` and ``passcode=`` parameters hidden."""
    if "=" not in text:
        return text
    return _SECRET_PARAMETER.sub(r"\1=[redacted]", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, trace and span
    ids, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        # The formatter runs where the record is emitted (StreamHandler), in its context.
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    JsonFormatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    quiet_server_logs()


class WithoutWebSocketRequestLines(logging.Filter):
    """Drops uvicorn's lines about each WebSocket handshake, for which
    :class:`RequestContextMiddleware` writes the access line instead: its request line has the
    query string (a browser's ``access_token``), and its websockets-sansio protocol reports
    every refusal sent as a denial response as an incomplete handshake, at ERROR. (A handshake
    that really ends unanswered has its access line with status 500, at WARNING.)"""

    _DROPPED = ('"WebSocket %s"', "ASGI callable returned without completing handshake")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        return not (isinstance(message, str) and any(d in message for d in self._DROPPED))


def quiet_server_logs() -> None:
    """uvicorn's error logger: no WebSocket request lines, and nothing below INFO (the
    websockets library logs handshake requests and headers through it at DEBUG)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, WithoutWebSocketRequestLines) for f in logger.filters):
        logger.addFilter(WithoutWebSocketRequestLines())
    logger.setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))


# One line per request (per WebSocket connection, when it ends): method, path without its query
# string (it may carry an access_token), status, duration and request id.
access_log = logging.getLogger("chat.access")

QUIET_PATHS = ("/healthz", "/readyz", "/metrics")


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-Id`` when it is sane (printable, at most 128 characters),
    a new random id otherwise."""
    for name, value in headers:
        if name == b"x-request-id":
            incoming = value.decode("latin-1")
            if incoming and len(incoming) <= 128 and incoming.isprintable():
                return incoming
            break
    return uuid.uuid4().hex


def access_level(path: str, status: int, quiet_paths: tuple[str, ...] = QUIET_PATHS) -> int:
    """WARNING for answers that report a failure of the server or of what it relies on (5xx,
    e.g. 502/503/504 for an upstream), DEBUG for probes and scrapes, INFO otherwise."""
    if status >= 500:
        return logging.WARNING
    if path in quiet_paths:
        return logging.DEBUG
    return logging.INFO


# /ws/{server}/{session}/{transport}: SockJS's session URLs under the STOMP endpoint's prefix
_SOCKJS_SESSION_PATH = re.compile(r"(/ws/[^/.]{1,64}/)([^/.]{1,64})(/[a-z_]+)")
_SESSION_DIGEST_KEY = secrets.token_bytes(16)


def loggable_path(path: str) -> str:
    """``path`` as an access line shows it: a SockJS session's id replaced by ``s-`` and a
    digest of it, keyed by this process."""
    match = _SOCKJS_SESSION_PATH.fullmatch(path)
    if match is None:
        return path
    digest = hmac.new(_SESSION_DIGEST_KEY, match.group(2).encode(), hashlib.sha256)
    return f"{match.group(1)}s-{digest.hexdigest()[:12]}{match.group(3)}"


def log_access(method: str, path: str, status: int, seconds: float, request_id: str) -> None:
    path = loggable_path(path)
    level = access_level(path, status)
    if access_log.isEnabledFor(level):
        duration_ms = round(seconds * 1000, 1)
        access_log.log(
            level,
            "%s %s %d %.1fms",
            method,
            path,
            status,
            duration_ms,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": duration_ms,
                "request_id": request_id,
            },
        )


class RequestContextMiddleware:
    """Gives every request and WebSocket handshake an id (kept from ``X-Request-Id`` when
    sane), echoes it in the answer, writes one access line per request (see
    :func:`log_access`), and records HTTP request count and latency by route template."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        echoed = (b"x-request-id", request_id.encode("latin-1"))
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        # A WebSocket closed before it was accepted is refused (uvicorn answers 403); one that
        # ends with no answer at all is a server error.
        status = 500
        accepted = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, accepted
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), echoed]}
            elif kind == "websocket.accept":
                status, accepted = 101, True
                message = {**message, "headers": [*message.get("headers", []), echoed]}
            elif kind == "websocket.close" and not accepted:
                status = 403
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            method = scope.get("method", "GET")
            log_access(method, scope["path"], status, elapsed, request_id)
            if scope["type"] == "http":
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                HTTP_LATENCY.labels(self.service, method, template).observe(elapsed)
                HTTP_REQUESTS.labels(self.service, method, template, str(status)).inc()
            request_id_var.reset(token)
