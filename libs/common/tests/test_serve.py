"""The server settings every service runs with."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from chat_common.serve import DEFAULT_WS_MAX_SIZE, KEEP_ALIVE_SECONDS, server_config


def test_the_websocket_message_bound_is_the_callers() -> None:
    app = Starlette()
    bounded = server_config(app, host="127.0.0.1", port=1, ws_max_size=80 * 1024)
    default = server_config(app, host="127.0.0.1", port=1)
    assert bounded.ws_max_size == 80 * 1024
    assert default.ws_max_size == DEFAULT_WS_MAX_SIZE
    assert bounded.access_log is False
    assert bounded.server_header is False
    assert bounded.proxy_headers is False  # X-Forwarded-For is each service's own decision
    assert bounded.ws_per_message_deflate is False  # small frames: not worth the CPU


async def test_an_idle_keep_alive_connection_outlasts_the_clients_pools() -> None:
    """A connection left idle longer than uvicorn's own 5 s (and than httpx's and Node's
    pools keep one) still carries the next request: the client closes first, never the
    server just as the client reuses it."""

    async def hello(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await PlainTextResponse("hello")(scope, receive, send)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = server_config(hello, host="127.0.0.1", port=port)
    config.lifespan = "off"
    assert config.timeout_keep_alive == KEEP_ALIVE_SECONDS
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not serving.done()
                await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
        try:
            for pause in (0.0, 5.5):
                await asyncio.sleep(pause)
                writer.write(request)
                async with asyncio.timeout(5):
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200"), head
                    assert await reader.readexactly(len(b"hello")) == b"hello"
        finally:
            writer.close()
    finally:
        server.should_exit = True
        await serving
