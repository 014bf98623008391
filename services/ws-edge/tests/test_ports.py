"""One port, two servers (ws_edge.ports): which server a request line goes to (pure), and the
first-line protocol that holds a connection's bytes until then (on a local asyncio server with
two recording protocols; the edge on a real port is in test_sockjs_http_it.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from websockets.server import ServerProtocol

from ws_edge import ports

PREFIX = b"/ws"


@pytest.mark.parametrize(
    "line",
    [
        b"POST /ws/000/abc/xhr HTTP/1.1",
        b"POST /ws/000/abc/xhr_send HTTP/1.1",
        b"POST /ws/000/abc/xhr_streaming?access_token=t HTTP/1.1",
        b"GET /ws/000/abc/eventsource HTTP/1.1",
        b"GET /ws/info HTTP/1.1",
        b"GET /ws/info?t=1 HTTP/1.1",
        b"OPTIONS /ws/000/abc/xhr HTTP/1.1",
        b"GET /ws/ HTTP/1.1",
        b"GET /ws/000/abc/websocket/ HTTP/1.1",  # not a transport: aiohttp answers 404
        b"GET /ws/000/abc/websocketx HTTP/1.1",
    ],
)
def test_sockjs_http_requests_go_to_the_http_server(line: bytes) -> None:
    assert ports.wants_http(line, PREFIX)


@pytest.mark.parametrize(
    "line",
    [
        b"GET /ws HTTP/1.1",  # STOMP over a raw WebSocket
        b"GET /ws?access_token=t HTTP/1.1",
        b"GET /ws/000/abc/websocket HTTP/1.1",  # SockJS's websocket transport
        b"GET /ws/000/abc/websocket?access_token=t/x HTTP/1.1",
        b"GET /healthz HTTP/1.1",
        b"GET /readyz HTTP/1.1",
        b"GET /metrics HTTP/1.1",
        b"POST /wsx/000/abc/xhr HTTP/1.1",  # another path that merely starts alike
        b"GET /?next=/ws/000/abc/xhr HTTP/1.1",
        b"GET http://edge/ws/000/abc/xhr HTTP/1.1",  # absolute form: not ours to answer
        b"GET /ws/000/abc/xhr",  # not a request line
        b"GET  /ws/000/abc/xhr HTTP/1.1",
        b"",
        b"garbage",
    ],
)
def test_everything_else_goes_to_the_websocket_server(line: bytes) -> None:
    assert not ports.wants_http(line, PREFIX)


# -- the first line, on a socket -------------------------------------------------------------


class Recorder(asyncio.Protocol):
    """A server protocol that records what it was given."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data = bytearray()
        self.made = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.made.set()

    def data_received(self, data: bytes) -> None:
        self.data += data
        assert self.transport is not None
        if self.data.endswith(b"\r\n\r\n"):
            self.transport.write(self.name.encode())


class Fixture:
    def __init__(self) -> None:
        self.chosen: list[Recorder] = []
        self.port = 0

    def factory(self, name: str) -> Callable[[], asyncio.Protocol]:
        def make() -> asyncio.Protocol:
            recorder = Recorder(name)
            self.chosen.append(recorder)
            return recorder

        return make

    def first_line(self) -> asyncio.Protocol:
        return ports.FirstLine(
            self.factory("websocket"),
            self.factory("http"),
            PREFIX,
            ServerProtocol(),
        )


@pytest.fixture
async def local() -> AsyncIterator[Fixture]:
    fixture = Fixture()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(fixture.first_line, "127.0.0.1", 0)
    fixture.port = server.sockets[0].getsockname()[1]
    try:
        yield fixture
    finally:
        server.close()
        await server.wait_closed()


async def exchange(port: int, *chunks: bytes) -> bytes:
    """Write ``chunks`` (yielding between them) and read the answer until EOF or 2 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)  # a separate segment, most of the time
        async with asyncio.timeout(5):
            answer = await reader.read(100)
        return answer
    finally:
        writer.close()


async def dropped(reader: asyncio.StreamReader, within: float) -> bytes:
    """What the peer wrote before it dropped the connection (an EOF or a reset) within
    ``within`` seconds."""
    got = bytearray()
    async with asyncio.timeout(within):
        try:
            while data := await reader.read(100):
                got += data
        except ConnectionResetError:
            pass
    return bytes(got)


@pytest.mark.parametrize(
    ("request_bytes", "server"),
    [
        (b"POST /ws/000/abc/xhr HTTP/1.1\r\nHost: x\r\n\r\n", "http"),
        (b"GET /ws/000/abc/websocket HTTP/1.1\r\nHost: x\r\n\r\n", "websocket"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "websocket"),
    ],
)
async def test_the_request_line_chooses_and_the_chosen_gets_every_byte(
    local: Fixture, request_bytes: bytes, server: str
) -> None:
    cut = 7  # the request line arrives in pieces
    answer = await exchange(local.port, request_bytes[:cut], request_bytes[cut:])
    assert answer == server.encode()
    [chosen] = local.chosen
    assert chosen.name == server
    assert bytes(chosen.data) == request_bytes


async def test_a_request_line_that_never_ends_is_dropped_after_the_timeout(
    local: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ports, "REQUEST_LINE_SECONDS", 0.3)
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", local.port)
    try:
        writer.write(b"GET /ws/000/abc/xhr HTTP/1.1")  # no CRLF
        await writer.drain()
        assert await dropped(reader, 5) == b""
        assert time.monotonic() - started >= 0.3
        assert local.chosen == []
    finally:
        writer.close()


async def test_a_request_line_past_the_cap_is_dropped_at_once(local: Fixture) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", local.port)
    try:
        writer.write(b"GET /" + b"x" * ports.MAX_REQUEST_LINE)
        await writer.drain()
        assert await dropped(reader, ports.REQUEST_LINE_SECONDS / 2) == b""  # before the timer
        assert local.chosen == []
    finally:
        writer.close()


async def test_the_timer_stops_once_the_line_is_in(
    local: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ports, "REQUEST_LINE_SECONDS", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", local.port)
    try:
        writer.write(b"POST /ws/000/abc/xhr HTTP/1.1\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)  # the scenario is time passing: past the request-line timeout
        writer.write(b"Host: x\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            assert await reader.read(100) == b"http"
    finally:
        writer.close()
