"""The gateway in front of real TCP upstreams: forwarding, token checks, failing upstreams."""

from __future__ import annotations

import asyncio
import contextlib
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

from gateway.app import create_app
from gateway.settings import Settings


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "authorization": request.headers.get("authorization"),
            "requestId": request.headers.get("x-request-id"),
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
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
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
) -> Callable[[str, str], contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]:
    public = tmp_path / "issuer.pem"
    public.write_bytes(issuer_keys.public_pem)

    @contextlib.asynccontextmanager
    async def make(session_url: str, message_url: str) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(
            session_svc_url=session_url,
            message_svc_url=message_url,
            jwt_public_key_file=str(public),
            jwt_issuer="flairbit",
            jwt_audience="chat",
            upstream_timeout_seconds=0.5,
            max_body_bytes=1024,
        )
        app = create_app(settings)
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
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
        gateway_factory(f"http://127.0.0.1:{down}", f"http://127.0.0.1:{slow}") as gw,
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
    assert waited < 3
    assert ready.status_code == 503


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
