"""SockJS's websocket transport as a STOMP link (ws_edge.links.SockJSWebSocket) on a local
websockets server: the open frame, the client's JSON arrays read as messages, a batch of STOMP
frames written as one ``a[...]``, ``c[code,reason]`` before the close frame (the Sender's frame
and farewell hooks), a broken message ending the link."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ws_edge.disconnect import Disconnect
from ws_edge.links import SockJSWebSocket

WITHIN = 5.0
Handler = Callable[[SockJSWebSocket], Awaitable[None]]


@contextlib.asynccontextmanager
async def linked(handler: Handler) -> AsyncIterator[ClientConnection]:
    """A client connected to a server that runs ``handler`` on its side's link."""
    done: list[BaseException] = []

    async def serve_link(socket: ServerConnection) -> None:
        link = SockJSWebSocket(socket)
        await link.opened()
        try:
            await handler(link)
        except BaseException as exc:  # the test sees the handler's failure
            done.append(exc)
            raise

    async with (
        serve(serve_link, "127.0.0.1", 0) as server,
        connect(
            f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", ping_interval=None
        ) as client,
    ):
        async with asyncio.timeout(WITHIN):
            assert await client.recv() == "o"  # the open frame first
        yield client
    assert not done, done


async def until_closed(client: ClientConnection) -> list[str]:
    got: list[str] = []
    async with asyncio.timeout(WITHIN):
        with contextlib.suppress(ConnectionClosed):
            while True:
                message = await client.recv()
                assert isinstance(message, str)
                got.append(message)
    return got


async def test_the_clients_arrays_are_read_message_by_message() -> None:
    received: list[str | bytes] = []

    async def collect(link: SockJSWebSocket) -> None:
        async for message in link:  # ends when the client closes cleanly
            received.append(message)

    async with linked(collect) as client:
        await client.send(json.dumps(["CONNECT\n\n\x00", "\n"]))
        await client.send("")  # an empty message is skipped
        await client.send(json.dumps("SEND\n\n\x00"))  # one JSON string
        await client.send(json.dumps([]))
        await client.send(json.dumps(["ünï\u2028"]).encode())  # as a binary message
    assert received == ["CONNECT\n\n\x00", "\n", "SEND\n\n\x00", "ünï\u2028"]


@pytest.mark.parametrize("broken", ["CONNECT\n\n\x00", "[1]", "{}", "[", '["a",null]'])
async def test_a_message_that_is_not_sockjs_ends_the_link_with_1002(broken: str) -> None:
    received: list[str | bytes] = []

    async def collect(link: SockJSWebSocket) -> None:
        async for message in link:
            received.append(message)

    async with linked(collect) as client:
        await client.send(json.dumps(["before"]))
        await client.send(broken)
        await client.send(json.dumps(["after"]))  # never read
        assert await until_closed(client) == []
        assert client.close_code == 1002
        assert client.close_reason == "broken SockJS message"
    assert received == ["before"]


async def test_a_batch_goes_as_one_messages_frame_and_the_close_after_it() -> None:
    async def talk(link: SockJSWebSocket) -> None:
        outlet = link.outlet(max_bytes=10_000, slow_close_seconds=1.0)
        assert outlet.send([b"RECEIPT\nreceipt-id:1\n\n\x00", b"MESSAGE\n\n\xe2\x80\xa8\x00"])
        assert outlet.send([b"\n"])
        outlet.close(Disconnect.PROTOCOL_ERROR)
        await outlet.finished(within=WITHIN)

    async with linked(talk) as client:
        got = await until_closed(client)
        assert got == [
            'a["RECEIPT\\nreceipt-id:1\\n\\n\\u0000","MESSAGE\\n\\n\\u2028\\u0000"]',
            'a["\\n"]',
            'c[1002,"STOMP protocol error"]',
        ]
        assert client.close_code == 1002


@pytest.mark.parametrize(
    ("reason", "farewell", "code"),
    [
        (Disconnect.CLIENT, 'c[1000,""]', 1000),
        (Disconnect.TRANSPORT_LOST, 'c[1000,""]', 1000),  # 1006 is never sent
        (Disconnect.SHUTDOWN, 'c[1012,"edge restarting; reconnect"]', 1012),
        (Disconnect.SLOW_CONSUMER, 'c[1008,"client too slow: outbound buffer full"]', 1008),
    ],
)
async def test_each_reason_closes_with_its_code_in_both_frames(
    reason: Disconnect, farewell: str, code: int
) -> None:
    async def close(link: SockJSWebSocket) -> None:
        outlet = link.outlet(max_bytes=10_000, slow_close_seconds=1.0)
        outlet.close(reason)
        await outlet.finished(within=WITHIN)

    async with linked(close) as client:
        assert await until_closed(client) == [farewell]
        assert client.close_code == code


async def test_abort_drops_the_connection() -> None:
    async def drop(link: SockJSWebSocket) -> None:
        link.abort()
        await asyncio.sleep(0)

    async with linked(drop) as client:
        assert await until_closed(client) == []
        assert client.close_code == 1006  # no close frame: the TCP connection just ended
