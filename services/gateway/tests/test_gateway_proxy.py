"""The gateway in front of real TCP upstreams: forwarding, token checks, failing upstreams."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chat_testing.waiting import eventually
from gateway.app import create_app
from gateway.settings import Settings

from .loopback import answers_garbage, hangs_up, json_logs, never_answers, raw_server


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "authorization": request.headers.get("authorization"),
            "requestId": request.headers.get("x-request-id"),
            "forwardedFor": request.headers.get("x-forwarded-for"),
            "body": body.decode(),
        },
        status_code=201 if request.method == "POST" else 200,
        headers={"x-upstream": "echo"},
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


@contextlib.asynccontextmanager
async def upstream_server(port: int) -> AsyncIterator[None]:
    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        ]
    )
    async with serving_app(app, port):
        yield


@contextlib.asynccontextmanager
async def serving_app(app: Starlette, port: int) -> AsyncIterator[None]:
    """``app`` served by uvicorn on 127.0.0.1:``port`` for the ``with`` block."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, lifespan="off", access_log=False
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to await
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def silent_server(port: int) -> AsyncIterator[None]:
    """Accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", port)
    try:
        yield
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gateway_factory(
    issuer_keys: Any, tmp_path: Any
) -> Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]:
    public = tmp_path / "issuer.pem"
    public.write_bytes(issuer_keys.public_pem)

    @contextlib.asynccontextmanager
    async def make(
        session_url: str, message_url: str, **overrides: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        values: dict[str, Any] = {
            "session_svc_url": session_url,
            "message_svc_url": message_url,
            "jwt_public_key_file": str(public),
            "jwt_issuer": "flairbit",
            "jwt_audience": "chat",
            "upstream_timeout_seconds": 10.0,
            "max_body_bytes": 1024,
            **overrides,
        }
        app = create_app(Settings(**values))
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app, client=("127.0.0.1", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield client

    return make


async def test_forwards_method_path_query_headers_and_body(
    gateway_factory: Any, make_token: Any
) -> None:
    port = free_port()
    token = make_token("alice@example.com")
    async with (
        upstream_server(port),
        gateway_factory(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}") as gw,
    ):
        answer = await gw.post(
            "/api/chat/abc/history?limit=5&before=9",
            content=b'{"x": 1}',
            headers={
                "Authorization": f"Bearer {token}",
                "content-type": "application/json",
                "x-request-id": "req-123",
            },
        )
        got = await gw.get("/api/chat/init", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 201
    assert answer.headers["x-upstream"] == "echo"
    assert answer.headers["x-request-id"] == "req-123"
    assert answer.json() == {
        "method": "POST",
        "path": "/api/chat/abc/history",
        "query": "limit=5&before=9",
        "authorization": f"Bearer {token}",
        "requestId": "req-123",
        "forwardedFor": "127.0.0.1",
        "body": '{"x": 1}',
    }
    assert got.json()["method"] == "GET"


async def test_bad_tokens_never_reach_an_upstream(gateway_factory: Any, make_token: Any) -> None:
    port = free_port()  # nothing listens: a forwarded request would give 503, not 401
    async with gateway_factory(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}") as gw:
        missing = await gw.get("/api/chat/sessions")
        expired = await gw.get(
            "/api/chat/sessions", headers={"Authorization": f"Bearer {make_token(ttl=-600)}"}
        )
    assert missing.status_code == expired.status_code == 401
    assert expired.json()["code"] == "TOKEN_EXPIRED"


async def test_down_upstream_is_503_and_slow_upstream_is_504(
    gateway_factory: Any, make_token: Any
) -> None:
    down, slow = free_port(), free_port()
    headers = {"Authorization": f"Bearer {make_token()}"}
    async with (
        silent_server(slow),
        gateway_factory(
            f"http://127.0.0.1:{down}", f"http://127.0.0.1:{slow}", upstream_timeout_seconds=0.5
        ) as gw,
    ):
        refused = await gw.post("/api/chat/init", json={}, headers=headers)
        started = time.monotonic()
        hanging = await gw.get("/api/chat/sessions", headers=headers)
        waited = time.monotonic() - started
        ready = await gw.get("/readyz")
    assert refused.status_code == 503
    assert refused.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert hanging.status_code == 504
    assert hanging.json()["code"] == "UPSTREAM_TIMEOUT"
    assert waited < 3  # bounded: the 0.5 s upstream timeout, not a hang
    # upstreams down for every gateway alike: reported, not a reason to leave the Service
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert len(ready.json()["dependencies"]) == 2


async def test_oversize_body_is_413(gateway_factory: Any, make_token: Any) -> None:
    port = free_port()
    async with (
        upstream_server(port),
        gateway_factory(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}") as gw,
    ):
        answer = await gw.post(
            "/api/chat/message",
            content=b"x" * 2048,
            headers={"Authorization": f"Bearer {make_token()}"},
        )
    assert answer.status_code == 413


async def test_unknown_paths_are_404_problems(gateway_factory: Any) -> None:
    async with gateway_factory("http://127.0.0.1:1", "http://127.0.0.1:1") as gw:
        answer = await gw.get("/nope")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


async def test_one_slow_upstream_does_not_starve_another(
    gateway_factory: Any, make_token: Any
) -> None:
    headers = {"Authorization": f"Bearer {make_token()}"}
    port = free_port()
    async with (
        raw_server(never_answers) as slow,
        upstream_server(port),
        gateway_factory(
            f"http://127.0.0.1:{slow.port}",
            f"http://127.0.0.1:{port}",
            upstream_max_connections=2,
            upstream_timeout_seconds=1.5,
        ) as gw,
    ):
        started = time.monotonic()
        hung = [
            asyncio.create_task(gw.post("/api/chat/init", json={}, headers=headers))
            for _ in range(5)
        ]
        await eventually(lambda: slow.connections >= 2, what="the slow upstream's pool is full")
        await asyncio.sleep(0.1)  # a negative check: none of the hung requests is answered
        assert not any(task.done() for task in hung)
        served = await gw.get("/api/chat/sessions", headers=headers)
        assert served.status_code == 200
        # served while the slow upstream's requests still hang, not after they timed out
        assert not any(task.done() for task in hung)
        answers = await asyncio.gather(*hung)
        waited = time.monotonic() - started
    assert [a.status_code for a in answers] == [504] * 5
    assert {a.json()["code"] for a in answers} == {"UPSTREAM_TIMEOUT"}
    # bounded: each waits 1.5 s at most, the wait for a connection included (those behind the
    # first two would otherwise answer after 3 s)
    assert waited < 1.5 + 1.0
    assert slow.most_open == 2  # its cap: the others waited for a connection


@pytest.mark.parametrize("misbehaviour", [hangs_up, answers_garbage])
async def test_an_upstream_that_hangs_up_or_answers_garbage_is_502(
    gateway_factory: Any, make_token: Any, misbehaviour: Any
) -> None:
    async with (
        raw_server(misbehaviour) as bad,
        gateway_factory(f"http://127.0.0.1:{bad.port}", f"http://127.0.0.1:{bad.port}") as gw,
    ):
        answer = await gw.get(
            "/api/chat/sessions", headers={"Authorization": f"Bearer {make_token()}"}
        )
    assert answer.status_code == 502
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "UPSTREAM_FAILED"


async def test_a_chunked_body_over_the_limit_is_413(gateway_factory: Any, make_token: Any) -> None:
    async def body(chunks: int) -> AsyncIterator[bytes]:
        for _ in range(chunks):
            yield b"x" * 256

    port = free_port()
    headers = {"Authorization": f"Bearer {make_token()}"}
    async with (
        upstream_server(port),
        gateway_factory(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}") as gw,
    ):
        over = await gw.post("/api/chat/message", content=body(8), headers=headers)
        within = await gw.post("/api/chat/message", content=body(3), headers=headers)
    assert over.status_code == 413
    assert over.headers["content-type"] == "application/problem+json"
    assert over.json()["code"] == "CONTENT_TOO_LARGE"
    assert within.status_code == 201
    assert within.json()["body"] == "x" * 768


async def test_flairbit_routes_take_only_flairbits_service_token(
    gateway_factory: Any, make_token: Any
) -> None:
    port = free_port()
    path = "/internal/flairbit/profiles/changed"
    refused = {
        "wrong issuer": make_token("flairbit", iss="someone-else", aud="chat-service"),
        "wrong audience": make_token("flairbit", iss="flairbit", aud="somewhere-else"),
        "a user's token": make_token("alice@example.com"),
        "FlairBit's, for a user": make_token("alice@example.com", aud="chat-service"),
    }
    async with (
        upstream_server(port),
        gateway_factory(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}") as gw,
    ):
        answers = {
            name: await gw.post(path, json={}, headers={"Authorization": f"Bearer {token}"})
            for name, token in refused.items()
        }
        service = make_token("flairbit", iss="flairbit", aud="chat-service")
        accepted = await gw.post(path, json={}, headers={"Authorization": f"Bearer {service}"})
    for name, answer in answers.items():
        assert answer.status_code == 401, name
        assert answer.headers["content-type"] == "application/problem+json", name
    assert accepted.status_code == 201
    assert accepted.json()["path"] == path


async def test_the_request_id_reaches_the_upstream_and_the_log_but_the_query_never_does(
    gateway_factory: Any, make_token: Any
) -> None:
    port, down = free_port(), free_port()
    headers = {"Authorization": f"Bearer {make_token()}"}
    with json_logs() as logs:
        async with (
            upstream_server(port),
            gateway_factory(f"http://127.0.0.1:{down}", f"http://127.0.0.1:{port}") as gw,
        ):
            answer = await gw.get(
                "/api/chat/abc/history?limit=5&access_token=s3cret-token", headers=headers
            )
            failed = await gw.post("/api/chat/init?access_token=s3cret-token", headers=headers)
    sent_upstream = answer.json()["requestId"]
    assert answer.json()["query"] == "limit=5&access_token=s3cret-token"
    assert len(sent_upstream) == 32
    assert answer.headers["x-request-id"] == sent_upstream
    lines = [json.loads(line) for line in logs.lines]
    access = [line for line in lines if line["logger"] == "chat.access"]
    assert [(a["method"], a["path"], a["status"]) for a in access] == [
        ("GET", "/api/chat/abc/history", 200),
        ("POST", "/api/chat/init", 503),
    ]
    assert access[0]["request_id"] == sent_upstream
    assert access[0]["level"] == "info"
    assert access[0]["duration_ms"] >= 0
    failed_id = failed.headers["x-request-id"]
    assert failed_id != sent_upstream
    warnings = [line for line in lines if line["level"] == "warning"]
    assert {w["logger"] for w in warnings} == {"gateway.proxy", "chat.access"}
    assert all(w["request_id"] == failed_id for w in warnings)
    # The gateway's lines (the test's own client logs each URL it asks, under "httpx").
    everything = "\n".join(line for line in logs.lines if '"logger": "httpx"' not in line)
    assert "s3cret-token" not in everything
    assert "access_token" not in everything
    assert "limit=5" not in everything


async def test_forwarded_for_is_the_peer_unless_the_gateway_trusts_the_header(
    gateway_factory: Any, make_token: Any
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    headers = {
        "Authorization": f"Bearer {make_token()}",
        "X-Forwarded-For": "198.51.100.9, 10.0.0.1",
    }
    async with upstream_server(port):
        async with gateway_factory(url, url) as gw:
            untrusted = await gw.get("/api/chat/sessions", headers=headers)
        async with gateway_factory(url, url, trust_forwarded_for=True) as gw:
            trusted = await gw.get("/api/chat/sessions", headers=headers)
    assert untrusted.json()["forwardedFor"] == "127.0.0.1"
    assert trusted.json()["forwardedFor"] == "198.51.100.9"
