"""The sender's pacing: every replay waiting for room wakes when the buffer drains."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from ws_edge.sender import Sender


class GatedSocket:
    """A socket whose writes complete only while its gate is open."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[bytes] = []

    async def send(self, chunk: bytes, text: bool = False) -> None:
        await self.gate.wait()
        self.sent.append(chunk)


async def test_two_waiters_for_room_both_wake_when_the_buffer_drains() -> None:
    socket = GatedSocket()
    sender = Sender(cast(Any, socket), max_bytes=200, slow_close_seconds=1.0)
    # 180 bytes; 120 once the writer holds the first chunk: above half of 200, no room
    assert sender.send([b"x" * 60, b"y" * 60, b"z" * 60])
    first = asyncio.create_task(sender.room())
    second = asyncio.create_task(sender.room())
    await asyncio.sleep(0.01)
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
    await asyncio.sleep(0.01)  # the writer sends the rest and stops
    socket.gate.clear()
    assert sender.send([b"b" * 60] * 3)
    late = asyncio.create_task(sender.room())
    await asyncio.sleep(0.01)
    assert not late.done()
    socket.gate.set()
    async with asyncio.timeout(2):
        await late
