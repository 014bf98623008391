"""Writing one connection's frames to its socket, through the bounded outbound buffer.

One WebSocket text message per STOMP frame. When nothing is queued and the socket takes data
(its transport holds nothing unsent), frames are written at once, all of them in one write,
with no task; otherwise they queue, and a writer task runs while there is something to write
(an idle connection has none) and waits for the socket to drain between frames. Closing
waits for what is queued, then sends the close frame with the reason's code; a client that
does not take the close frame within the grace period (a slow reader, a vanished peer) has its
socket dropped. A slow reader's backlog is discarded at once and its blocked write abandoned,
so its memory is given back before the grace period runs.

Over SockJS's ``websocket`` transport the frames go out wrapped (``frame``: a batch of STOMP
frames as one SockJS message) and the close frame follows a SockJS close (``farewell``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection as Socket
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from .disconnect import Disconnect
from .outbound import OutboundBuffer

CLOSE_TIMEOUT_SECONDS = 5.0


class Sender:
    def __init__(
        self,
        socket: Socket,
        max_bytes: int,
        slow_close_seconds: float,
        *,
        frame: Callable[[list[bytes]], list[bytes]] | None = None,
        farewell: Callable[[int, str], bytes] | None = None,
    ) -> None:
        self._socket = socket
        self._frame = frame
        self._farewell = farewell
        self._out = OutboundBuffer(max_bytes)
        self._low_water = max_bytes // 2
        self._slow_close = slow_close_seconds
        self._drained: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: Disconnect | None = None

    @property
    def buffered(self) -> int:
        return self._out.size

    def send(self, chunks: list[bytes]) -> bool:
        """Write or queue ``chunks``; False when the buffer is full (the client is too slow)."""
        if self._closing is Disconnect.SLOW_CONSUMER:
            return False
        if self._frame is not None:
            chunks = self._frame(chunks)
        if (
            self._task is None
            and not self._out
            and self._closing is None
            and self._write_now(chunks)
        ):
            return True
        if not self._out.extend(chunks):
            return False
        self._kick()
        return True

    def _write_now(self, chunks: list[bytes]) -> bool:
        """Write ``chunks`` in one go if the socket is open and has nothing unsent (so the
        kernel takes them, or what it leaves is one write's worth); False to queue them."""
        socket = self._socket
        transport = socket.transport
        if (
            socket.protocol.state is not State.OPEN
            or socket.send_in_progress is not None
            or transport.is_closing()
            or transport.get_write_buffer_size() > 0
        ):
            return False
        for chunk in chunks:
            socket.protocol.send_text(chunk)
        data = socket.protocol.data_to_send()  # frames only: the connection is open
        if data:
            transport.write(data[0] if len(data) == 1 else b"".join(data))
        return True

    def close(self, reason: Disconnect) -> None:
        """Close after what is queued (a slow consumer: at once, its backlog dropped)."""
        slow = Disconnect.SLOW_CONSUMER
        if self._closing is slow or (self._closing is not None and reason is not slow):
            return
        self._closing = reason
        if reason is Disconnect.SLOW_CONSUMER:
            self._out.clear()
            if self._task is not None:  # blocked on a socket the client does not read
                self._task.cancel()
                self._task = None
        self._kick()

    async def room(self) -> None:
        """Wait while the buffer is above half full (replays pace themselves on it). Every
        waiter shares one event, so two replays waiting at once both wake."""
        while self._out.size > self._low_water and self._closing is None:
            if self._drained is None:
                self._drained = asyncio.Event()
            await self._drained.wait()

    async def finished(self, within: float) -> None:
        """Wait (at most ``within`` seconds) for the writes and the close to be done."""
        task = self._task
        if task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, ConnectionClosed):
                await asyncio.wait_for(asyncio.shield(task), within)

    def _kick(self) -> None:
        if (self._out or self._closing is not None) and self._task is None:
            self._task = asyncio.create_task(self._write())

    async def _write(self) -> None:
        try:
            while (chunk := self._out.pop()) is not None:
                await self._socket.send(chunk, text=True)
                if self._out.size <= self._low_water:
                    self._wake()
            if self._closing is not None:
                await self._close_socket(self._closing)
        except ConnectionClosed:
            pass
        finally:
            if self._task is asyncio.current_task():
                self._task = None
            self._wake()

    def _wake(self) -> None:
        """Wake every :meth:`room` waiter (each checks the buffer again)."""
        drained, self._drained = self._drained, None
        if drained is not None:
            drained.set()

    async def _close_socket(self, reason: Disconnect) -> None:
        slow = reason is Disconnect.SLOW_CONSUMER
        code = 1000 if reason is Disconnect.TRANSPORT_LOST else reason.code  # 1006: never sent
        try:
            async with asyncio.timeout(self._slow_close if slow else CLOSE_TIMEOUT_SECONDS):
                if self._farewell is not None:
                    await self._socket.send(self._farewell(code, reason.reason), text=True)
                await self._socket.close(code, reason.reason)
        except TimeoutError:
            self._socket.transport.abort()
