"""What a STOMP connection runs over (:class:`Link`): a WebSocket carrying STOMP frames as they
are (``/ws``), or a SockJS session carrying them inside SockJS frames (over a WebSocket here,
:class:`SockJSWebSocket`; over HTTP requests in :mod:`ws_edge.sockjs_http`).

A link gives the client's messages in order (the iteration ends when the client closed
cleanly; :class:`LinkLost`, or websockets' ``ConnectionClosed``, when it vanished), an
:class:`Outlet` through which the connection's frames go out (bounded: a full one means the
client is too slow), and a way to drop the client at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from websockets.asyncio.server import ServerConnection

from . import sockjs
from .disconnect import Disconnect
from .sender import Sender


class LinkLost(Exception):
    """The client went away without a goodbye (a SockJS session expired)."""


class Outlet(Protocol):
    @property
    def buffered(self) -> int: ...

    def send(self, chunks: list[bytes]) -> bool:
        """Write or queue ``chunks`` (one STOMP frame each); False when the client is too
        slow (what was queued is dropped)."""

    def close(self, reason: Disconnect) -> None:
        """Close after what is queued (a slow consumer: at once)."""

    async def room(self) -> None:
        """Wait while the outlet is more than half full."""

    async def finished(self, within: float) -> None:
        """Wait, at most ``within`` seconds, for the writes and the close to be done."""


class Link(Protocol):
    def __aiter__(self) -> AsyncIterator[str | bytes]: ...

    def outlet(self, max_bytes: int, slow_close_seconds: float) -> Outlet: ...

    def abort(self) -> None: ...


def _sockjs_messages(chunks: list[bytes]) -> list[bytes]:
    return [sockjs.messages_frame([chunk.decode() for chunk in chunks])]


def _sockjs_close(code: int, reason: str) -> bytes:
    return sockjs.close_frame(code, reason)


class SockJSWebSocket:
    """SockJS's ``websocket`` transport: the open frame first, each batch of STOMP frames as
    one ``a[...]`` message, the client's messages in JSON arrays, ``c[code,reason]`` before the
    close frame. A message that is not a JSON array of strings ends the connection."""

    __slots__ = ("_socket",)

    def __init__(self, socket: ServerConnection) -> None:
        self._socket = socket

    async def opened(self) -> None:
        await self._socket.send(sockjs.OPEN.decode())

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        async for data in self._socket:
            raw = data.encode() if isinstance(data, str) else data
            if not raw:
                continue
            try:
                messages = sockjs.parse_messages(raw)
            except sockjs.BadPayload:
                await self._socket.close(1002, "broken SockJS message")
                return
            for message in messages:
                yield message

    def outlet(self, max_bytes: int, slow_close_seconds: float) -> Outlet:
        return Sender(
            self._socket,
            max_bytes,
            slow_close_seconds,
            frame=_sockjs_messages,
            farewell=_sockjs_close,
        )

    def abort(self) -> None:
        self._socket.transport.abort()
