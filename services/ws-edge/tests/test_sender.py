"""The sender's pacing: every replay waiting for room wakes when the buffer drains."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.protocol import State

from chat_testing.waiting import eventually
from ws_edge.sender import Sender


class GatedTransport:
    """A transport that holds unsent data while the socket's gate is closed."""

    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0 if self.gate.is_set() else 1


class GatedSocket:
    """An open socket whose writes complete only while its gate is open (a client that does
    not read: so frames queue and are written by the sender's task)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[bytes] = []
        self.transport = GatedTransport(self.gate)
        self.protocol = SimpleNamespace(state=State.OPEN)
        self.send_in_progress = None

    async def send(self, chunk: bytes, text: bool = False) -> None:
        await self.gate.wait()
        self.sent.append(chunk)


async def test_frames_go_at_once_in_one_write_when_the_socket_has_room() -> None:
    """A real WebSocket: with nothing queued, the frames are written before send() returns
    (no task), all in one transport write, and the client reads each as its own message."""
    writes: list[int] = []
    done = asyncio.Event()

    async def handler(socket: ServerConnection) -> None:
        real_write = socket.transport.write

        def counting(data: bytes | bytearray | memoryview) -> None:
            writes.append(len(data))
            real_write(data)

        socket.transport.write = counting  # type: ignore[method-assign]
        sender = Sender(socket, max_bytes=1_000, slow_close_seconds=1.0)
        assert sender.send([b"MESSAGE one", b"MESSAGE two", b"MESSAGE three"])
        assert sender.buffered == 0  # nothing queued: it went
        assert writes == [
            sum(len(m) + 2 for m in (b"MESSAGE one", b"MESSAGE two", b"MESSAGE three"))
        ]
        await done.wait()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as client:
            received = [await client.recv() for _ in range(3)]
            done.set()
    assert received == ["MESSAGE one", "MESSAGE two", "MESSAGE three"]


async def test_two_waiters_for_room_both_wake_when_the_buffer_drains() -> None:
    socket = GatedSocket()
    sender = Sender(cast(Any, socket), max_bytes=200, slow_close_seconds=1.0)
    # 180 bytes; 120 once the writer holds the first chunk: above half of 200, no room
    assert sender.send([b"x" * 60, b"y" * 60, b"z" * 60])
    first = asyncio.create_task(sender.room())
    second = asyncio.create_task(sender.room())
    await asyncio.sleep(0.01)  # a negative check: neither waiter wakes while the gate is shut
    assert not first.done()
    assert not second.done()
    socket.gate.set()
    async with asyncio.timeout(2):  # before the fix only the latest waiter woke
        await asyncio.gather(first, second)
    assert socket.sent == [b"x" * 60, b"y" * 60, b"z" * 60]


async def test_a_waiter_arriving_after_a_wake_waits_for_the_next_drain() -> None:
    socket = GatedSocket()
    sender = Sender(cast(Any, socket), max_bytes=200, slow_close_seconds=1.0)
    assert sender.send([b"a" * 60] * 3)
    early = asyncio.create_task(sender.room())
    await asyncio.sleep(0)
    socket.gate.set()
    async with asyncio.timeout(2):
        await early
    # the writer sends the rest and stops (it does so in the step that sends the last chunk)
    await eventually(lambda: len(socket.sent) == 3, what="the first three chunks sent")
    socket.gate.clear()
    assert sender.send([b"b" * 60] * 3)
    late = asyncio.create_task(sender.room())
    await asyncio.sleep(0.01)  # a negative check: no wake-up left over from the last drain
    assert not late.done()
    socket.gate.set()
    async with asyncio.timeout(2):
        await late
