"""JSON log lines: one object per line, with the request id and, inside a span, the trace and
span ids that join them to the trace; one access line per request, never with its query."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message, Scope
from starlette.websockets import WebSocket

from chat_common.observability import (
    JsonFormatter,
    RequestContextMiddleware,
    WithoutWebSocketRequestLines,
    loggable_path,
    quiet_server_logs,
    redact,
    request_id_from,
    request_id_var,
)


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    provider = TracerProvider()  # the test's own: the process's global one is left alone
    yield provider.get_tracer("test")
    provider.shutdown()


def line(message: str = "hello %s", *args: Any, **extra: Any) -> dict[str, Any]:
    record = logging.LogRecord("chat.test", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    parsed: dict[str, Any] = json.loads(JsonFormatter("svc").format(record))
    return parsed


def test_a_line_outside_a_span_has_no_trace_ids() -> None:
    entry = line("hello %s", "world", outbox_id=7)
    assert entry["msg"] == "hello world"
    assert entry["service"] == "svc"
    assert entry["level"] == "info"
    assert entry["outbox_id"] == 7
    assert "trace_id" not in entry
    assert "span_id" not in entry


def test_a_line_inside_a_span_carries_its_trace_and_span_ids(tracer: trace.Tracer) -> None:
    token = request_id_var.set("req-1")
    try:
        with tracer.start_as_current_span("outer") as outer:
            with tracer.start_as_current_span("inner") as inner:
                in_inner = line()
            in_outer = line()
    finally:
        request_id_var.reset(token)
    trace_id = f"{outer.get_span_context().trace_id:032x}"
    assert in_inner["trace_id"] == in_outer["trace_id"] == trace_id
    assert in_inner["span_id"] == f"{inner.get_span_context().span_id:016x}"
    assert in_outer["span_id"] == f"{outer.get_span_context().span_id:016x}"
    assert in_inner["request_id"] == "req-1"
    assert len(in_inner["trace_id"]) == 32
    assert len(in_inner["span_id"]) == 16


def test_exceptions_are_logged_with_their_span(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("failing") as span:
        try:
            raise ValueError("boom")
        except ValueError:
            record = logging.LogRecord(
                "chat.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
            )
            entry = json.loads(JsonFormatter("svc").format(record))
    assert entry["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "ValueError: boom" in entry["exc"]


def access_app() -> RequestContextMiddleware:
    async def ok(request: Request) -> Response:
        return PlainTextResponse(request_id_var.get() or "")

    async def unavailable(request: Request) -> Response:
        return PlainTextResponse("down", status_code=503)

    async def accepted(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    async def refused(websocket: WebSocket) -> None:
        await websocket.close()

    async def unanswered(websocket: WebSocket) -> None:
        return None

    app = Starlette(
        routes=[
            Route("/ok", ok),
            Route("/healthz", ok),
            Route("/down", unavailable),
            WebSocketRoute("/ws/accepted", accepted),
            WebSocketRoute("/ws/refused", refused),
            WebSocketRoute("/ws/unanswered", unanswered),
        ]
    )
    return RequestContextMiddleware(app, service="svc")


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    formatter = JsonFormatter("svc")
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "chat.access"]


async def test_one_access_line_per_request_without_the_query_string(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="chat.access")
    transport = httpx.ASGITransport(app=access_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        kept = await client.get("/ok?access_token=s3cret&x=1", headers={"x-request-id": "r-42"})
        fresh = await client.get("/ok")
        down = await client.get("/down")
        probe = await client.get("/healthz")
    lines = access_lines(caplog)
    assert [line["path"] for line in lines] == ["/ok", "/ok", "/down", "/healthz"]
    first, second, failed, probed = lines
    assert kept.headers["x-request-id"] == kept.text == first["request_id"] == "r-42"
    assert first["method"] == "GET"
    assert first["status"] == 200
    assert first["level"] == "info"
    assert isinstance(first["duration_ms"], float)
    assert len(fresh.headers["x-request-id"]) == 32
    assert second["request_id"] == fresh.headers["x-request-id"] == fresh.text
    assert failed["status"] == down.status_code == 503
    assert failed["level"] == "warning"
    assert failed["request_id"] == down.headers["x-request-id"]
    assert probed["level"] == "debug"
    assert probe.status_code == 200
    logged = "\n".join(caplog.text.splitlines() + [json.dumps(line) for line in lines])
    assert "s3cret" not in logged
    assert "access_token" not in logged


async def test_sockjs_session_ids_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Whoever holds a SockJS session's id can poll its frames and post into it: the access
    line names the session by a digest, the same for one session's requests, another for
    another session; paths that name no session are logged as they are."""

    async def ok(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = RequestContextMiddleware(
        Starlette(routes=[Route("/{rest:path}", ok, methods=["POST"])]), service="svc"
    )
    caplog.set_level(logging.INFO, logger="chat.access")
    paths = [
        "/ws/123/k3j9x0qz/xhr",
        "/ws/123/k3j9x0qz/xhr_send",
        "/ws/456/pq81mmza/xhr_streaming",
        "/ws/info",
        "/api/chat/sessions",
    ]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        for path in paths:
            assert (await client.post(path)).status_code == 200
    logged = [line["path"] for line in access_lines(caplog)]
    assert "k3j9x0qz" not in caplog.text
    assert "pq81mmza" not in caplog.text
    first, second, other, info, api = logged
    masked = first.split("/")[3]
    assert masked.startswith("s-")
    assert first == f"/ws/123/{masked}/xhr"
    assert second == f"/ws/123/{masked}/xhr_send"
    assert other.startswith("/ws/456/s-")
    assert other.endswith("/xhr_streaming")
    assert other.split("/")[3] != masked
    assert (info, api) == ("/ws/info", "/api/chat/sessions")
    assert loggable_path("/ws/123/k3j9x0qz/xhr") == logged[0]


@pytest.mark.parametrize("junk", ["", "x" * 129, "bad\x01id"])
def test_an_insane_incoming_request_id_is_replaced(junk: str) -> None:
    chosen = request_id_from([(b"x-request-id", junk.encode("latin-1"))])
    assert chosen != junk
    assert len(chosen) == 32


async def test_websocket_handshakes_get_an_id_and_an_access_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chat.access")
    app = access_app()
    sent: list[Message] = []

    async def run(path: str) -> None:
        inbox: list[Message] = [
            {"type": "websocket.connect"},
            {"type": "websocket.disconnect", "code": 1000},
        ]

        async def receive() -> Message:
            return inbox.pop(0)

        async def send(message: Message) -> None:
            sent.append(message)

        scope: Scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"access_token=s3cret",
            "headers": [(b"x-request-id", b"ws-1")],
            "scheme": "ws",
            "server": ("svc", 80),
            "client": ("127.0.0.1", 5000),
            "subprotocols": [],
            "extensions": {"websocket.http.response": {}},
        }
        await app(scope, receive, send)

    await run("/ws/accepted")
    await run("/ws/refused")
    await run("/ws/unanswered")
    accept = next(m for m in sent if m["type"] == "websocket.accept")
    assert (b"x-request-id", b"ws-1") in accept["headers"]
    lines = access_lines(caplog)
    assert [(line["path"], line["status"]) for line in lines] == [
        ("/ws/accepted", 101),
        ("/ws/refused", 403),
        ("/ws/unanswered", 500),
    ]
    assert [line["level"] for line in lines] == ["info", "info", "warning"]
    assert all(line["request_id"] == "ws-1" for line in lines)
    assert "s3cret" not in caplog.text


def test_tokens_in_a_message_are_redacted() -> None:
    entry = line('GET %s "%s"', "/ws?x=1&access_token=eyJ.abc.def&passcode=hunter2", "ok")
    assert entry["msg"] == 'GET /ws?x=1&access_token=[redacted]&passcode=[redacted] "ok"'
    assert redact("nothing to hide") == "nothing to hide"


def test_uvicorn_websocket_lines_are_dropped() -> None:
    uvicorn_log = logging.getLogger("uvicorn.error")
    level, filters = uvicorn_log.level, list(uvicorn_log.filters)
    quiet_server_logs()
    quiet_server_logs()  # idempotent
    try:
        handshake = uvicorn_log.makeRecord(
            "uvicorn.error",
            logging.INFO,
            __file__,
            1,
            '%s - "WebSocket %s" [accepted]',
            ("127.0.0.1:5000", "/ws?access_token=secret"),
            None,
        )
        started = uvicorn_log.makeRecord(
            "uvicorn.error", logging.INFO, __file__, 1, "Started server process [%d]", (1,), None
        )
        denied = uvicorn_log.makeRecord(
            "uvicorn.error",
            logging.ERROR,
            __file__,
            1,
            "ASGI callable returned without completing handshake.",
            (),
            None,
        )
        assert not uvicorn_log.filter(handshake)
        assert not uvicorn_log.filter(denied)
        assert uvicorn_log.filter(started)
        assert not uvicorn_log.isEnabledFor(logging.DEBUG)
        assert sum(isinstance(f, WithoutWebSocketRequestLines) for f in uvicorn_log.filters) == 1
    finally:
        uvicorn_log.setLevel(level)
        uvicorn_log.filters[:] = filters
