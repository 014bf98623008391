"""Real loopback servers for the gateway's tests: ASGI apps under uvicorn, and raw TCP
upstreams that misbehave (never answer, hang up, answer something that is not HTTP, break a
chunked answer half-way)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from chat_common.observability import JsonFormatter
from gateway.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A running app: its port, and the lifespan state its requests carry (``scope["state"]``)."""

    port: int
    state: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, config: uvicorn.Config | None = None) -> AsyncIterator[Served]:
    """``app`` under uvicorn on a free loopback port (or as ``config`` says)."""
    served = Served(config.port if config else free_port())

    async def capturing(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "state" in scope:
            served.state.update(scope["state"])
        await app(scope, receive, send)

    if config is None:
        config = uvicorn.Config(
            capturing, host="127.0.0.1", port=served.port, log_config=None, lifespan="on"
        )
    else:
        config.app = capturing
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield served
    finally:
        server.should_exit = True
        await task


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    port: int
    connections: int = 0  # accepted so far
    open: int = 0  # open now
    most_open: int = 0  # open at the same time, at most


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[RawServer]:
    """A TCP server on a free loopback port running ``handler`` per connection."""
    raw = RawServer(0)
    writers: list[asyncio.StreamWriter] = []

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw.connections += 1
        raw.open += 1
        raw.most_open = max(raw.most_open, raw.open)
        writers.append(writer)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await handler(reader, writer)
        finally:
            raw.open -= 1

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    raw.port = server.sockets[0].getsockname()[1]
    try:
        yield raw
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    await reader.read()  # until the gateway gives up and hangs up


async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.close()


async def answers_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"\x16\x03\x01 this is not HTTP at all\r\n\r\n")
    await writer.drain()
    writer.close()


async def breaks_mid_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A chunked 200 that stops after 3 chunks of 64 KiB, the connection dropped."""
    await read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
    writer.write(b"transfer-encoding: chunked\r\n\r\n")
    for _ in range(3):
        writer.write(b"10000\r\n" + b"a" * 0x10000 + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
    writer.transport.abort()


class JsonLines(logging.Handler):
    """Keeps every record as the JSON line a service would write, formatted where it is
    emitted (so with the request id of its request)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter("gateway"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def json_logs() -> Iterator[JsonLines]:
    handler = JsonLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def gateway_settings(issuer_keys: Any, tmp_path: Any, **overrides: Any) -> Settings:
    """Gateway settings for tests: user tokens from ``issuer_keys`` (iss flairbit, aud chat)."""
    public = tmp_path / "issuer.pem"
    public.write_bytes(issuer_keys.public_pem)
    values: dict[str, Any] = {
        "jwt_public_key_file": str(public),
        "jwt_issuer": "flairbit",
        "jwt_audience": "chat",
        **overrides,
    }
    return Settings(**values)
