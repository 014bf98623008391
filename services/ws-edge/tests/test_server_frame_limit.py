"""A WebSocket message over the frame limit: the client gets a STOMP ERROR saying so, then the
close frame 1009; nothing over the limit is buffered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from chat_stomp.frames import ALL_COMMANDS, Frame
from chat_stomp.parser import FrameParser
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedError
from websockets.frames import CloseCode

from chat_testing.stomp import StompClient
from ws_edge.server import TOO_LARGE, EdgeSocket, too_large_error

LIMIT = 1024
WITHIN = 5.0


def parse(data: str | bytes) -> Frame:
    raw = data.encode() if isinstance(data, str) else data
    [frame] = FrameParser(commands=ALL_COMMANDS, version=None).feed(raw)
    assert isinstance(frame, Frame)
    return frame


async def closed_with(socket: ClientConnection) -> int | None:
    with contextlib.suppress(ConnectionClosedError):
        async with asyncio.timeout(WITHIN):
            await socket.recv()
    await socket.wait_closed()
    return socket.close_code


def test_the_error_frame_names_the_limit() -> None:
    frame = parse(too_large_error(65536))
    assert frame.command == "ERROR"
    assert frame.header("message") == TOO_LARGE
    assert frame.header("content-type") == "text/plain"
    assert b"65536 bytes" in frame.body


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[str]:
    async def echo(socket: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosedError):
            async for message in socket:
                await socket.send(message)

    async with serve(
        echo, "127.0.0.1", 0, create_connection=EdgeSocket, max_size=LIMIT, compression=None
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


async def test_a_message_over_the_limit_gets_an_error_frame_then_1009() -> None:
    async with echo_server() as url, connect(url, compression=None) as socket:
        await socket.send("x" * LIMIT)  # exactly the limit passes
        assert await socket.recv() == "x" * LIMIT
        await socket.send("x" * (LIMIT + 1))
        error = parse(await socket.recv())
        assert error.header("message") == TOO_LARGE
        assert f"at most {LIMIT} bytes".encode() in error.body
        assert await closed_with(socket) == CloseCode.MESSAGE_TOO_BIG


async def test_a_fragmented_message_over_the_limit_is_refused_the_same_way() -> None:
    async with echo_server() as url, connect(url, compression=None) as socket:
        await socket.send(["y" * 600, "y" * 600])
        error = parse(await socket.recv())
        assert error.header("message") == TOO_LARGE
        assert await closed_with(socket) == CloseCode.MESSAGE_TOO_BIG


async def test_other_failures_send_no_error_frame() -> None:
    async with echo_server() as url, connect(url, compression=None) as socket:
        await socket.send("fine")
        assert await socket.recv() == "fine"
        socket.transport.write(b"\x81\x01z")  # an unmasked frame: a protocol error
        with pytest.raises(ConnectionClosedError) as closed:
            async with asyncio.timeout(WITHIN):
                await socket.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CloseCode.PROTOCOL_ERROR


async def test_the_edge_tells_a_stomp_client_its_frame_was_too_large(world: Any) -> None:
    edge = await world.edge(max_frame_bytes=4096, max_body_bytes=2048)
    client: StompClient = await world.raw(edge, world.token("big@example.com"))
    await client.socket.send("SEND\ndestination:/app/chat.send\n\n" + "z" * 5000 + "\0")
    error = await client.next_frame(within=WITHIN)
    assert error.command == "ERROR"
    assert error.header("message") == TOO_LARGE
    assert b"4096 bytes" in error.body
    assert await closed_with(client.socket) == CloseCode.MESSAGE_TOO_BIG
