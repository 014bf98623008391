"""Large and unsized answers streamed through the gateway (a real uvicorn in front of a real
loopback upstream): intact when all goes well, and never a pooled connection left behind when
the client leaves or the upstream breaks half-way."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chat_testing.waiting import eventually
from gateway.app import AppState, create_app
from gateway.routing import Upstream

from .loopback import Served, breaks_mid_answer, gateway_settings, raw_server, serving

CHUNK = 32 * 1024
BIG_CHUNKS = 40  # 1.25 MiB


def pattern(index: int) -> bytes:
    return bytes([65 + index % 26]) * CHUNK


async def big(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for index in range(BIG_CHUNKS):
            yield pattern(index)
            await asyncio.sleep(0)

    return StreamingResponse(body(), media_type="application/json")


async def endless(request: Request) -> Response:
    """Streams for as long as someone reads (at most about a minute)."""

    async def body() -> AsyncIterator[bytes]:
        for index in range(6000):
            yield pattern(index)
            await asyncio.sleep(0.01)

    return StreamingResponse(body(), media_type="application/json")


async def small(request: Request) -> Response:
    return JSONResponse({"ok": True})


upstream_app = Starlette(
    routes=[
        Route("/api/chat/big/history", big),
        Route("/api/chat/endless/history", endless),
        Route("/api/chat/small/history", small),
    ]
)


def acquired(served: Served) -> int:
    """Connections the gateway's message-svc pool has handed out and not had back."""
    state: AppState = served.state["app"]
    connector = state.pools[Upstream.MESSAGE].connector
    assert isinstance(connector, aiohttp.BaseConnector)
    return len(connector._acquired)


async def until_released(served: Served) -> int:
    """Waits until the pool has every connection back; how many are still out (0)."""
    await eventually(lambda: not acquired(served), what="every connection back in the pool")
    return acquired(served)


@contextlib.asynccontextmanager
async def stack(
    issuer_keys: Any, tmp_path: Any, message_url: str | None = None
) -> AsyncIterator[Served]:
    async with contextlib.AsyncExitStack() as stack:
        if message_url is None:
            upstream = await stack.enter_async_context(serving(upstream_app))
            message_url = f"http://127.0.0.1:{upstream.port}"
        settings = gateway_settings(
            issuer_keys,
            tmp_path,
            message_svc_url=message_url,
            session_svc_url=message_url,
            upstream_max_connections=1,
            upstream_timeout_seconds=60.0,
        )
        yield await stack.enter_async_context(serving(create_app(settings)))


async def test_an_unsized_answer_of_over_a_megabyte_arrives_intact(
    issuer_keys: Any, tmp_path: Any, make_token: Any
) -> None:
    headers = {"Authorization": f"Bearer {make_token()}"}
    async with (
        stack(issuer_keys, tmp_path) as gateway,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}", timeout=10) as client,
    ):
        answer = await client.get("/api/chat/big/history", headers=headers)
        assert answer.status_code == 200
        assert answer.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in answer.headers
        assert answer.content == b"".join(pattern(i) for i in range(BIG_CHUNKS))
        assert len(answer.content) >= 1 << 20
        assert await until_released(gateway) == 0
        # the connection went back to the pool, and the next request uses it
        assert (await client.get("/api/chat/small/history", headers=headers)).json() == {"ok": True}


async def test_a_client_leaving_mid_stream_leaves_no_connection_in_use(
    issuer_keys: Any, tmp_path: Any, make_token: Any
) -> None:
    token = make_token()
    async with stack(issuer_keys, tmp_path) as gateway:
        for _ in range(2):  # a pool of one: a leaked connection would stall the second round
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(
                b"GET /api/chat/endless/history HTTP/1.1\r\nHost: gw\r\n"
                + f"Authorization: Bearer {token}\r\n\r\n".encode()
            )
            await writer.drain()
            received = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert received.startswith(b"HTTP/1.1 200")
            while len(received) < 4 * CHUNK:
                received += await asyncio.wait_for(reader.read(CHUNK), 5)
            assert acquired(gateway) == 1
            writer.transport.abort()
            assert await until_released(gateway) == 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}") as client:
            started = time.monotonic()
            answer = await client.get(
                "/api/chat/small/history", headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 200
            # bounded: a leaked connection would hold the pool of one for the 60 s timeout
            assert time.monotonic() - started < 10


async def test_an_upstream_breaking_mid_stream_cuts_the_answer_and_frees_the_connection(
    issuer_keys: Any, tmp_path: Any, make_token: Any
) -> None:
    async with (
        raw_server(breaks_mid_answer) as broken,
        stack(issuer_keys, tmp_path, f"http://127.0.0.1:{broken.port}") as gateway,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}", timeout=10) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(
                "/api/chat/any/history", headers={"Authorization": f"Bearer {make_token()}"}
            )
        assert await until_released(gateway) == 0
