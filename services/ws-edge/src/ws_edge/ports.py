"""One port, two servers: the edge's WebSocket server (websockets: ``/ws``, SockJS's
``websocket`` transport, ``/healthz``, ``/readyz``, ``/metrics``) and its HTTP server (aiohttp:
SockJS's HTTP transports, which need POST and streamed answers, neither of which the WebSocket
server offers).

A new connection's request line decides (:func:`wants_http`): until it has arrived, a
:class:`FirstLine` protocol holds the bytes; then it hands the transport, and the bytes, to the
chosen server's protocol (asyncio's ``set_protocol``). It is plugged in as websockets'
``create_connection`` factory, which that library offers for wrapping its connections; a
connection that goes to aiohttp never reaches websockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from websockets.asyncio.server import Server, ServerConnection
from websockets.server import ServerProtocol

MAX_REQUEST_LINE = 8192
REQUEST_LINE_SECONDS = 10.0


def wants_http(request_line: bytes, prefix: bytes) -> bool:
    """Whether the request goes to the HTTP server: a path under ``prefix/`` that is not a
    WebSocket transport (anything else, and anything unparsable, goes to the WebSocket server,
    which answers it or refuses it)."""
    parts = request_line.split(b" ")
    if len(parts) != 3:
        return False
    path = parts[1].split(b"?", 1)[0]
    return path.startswith(prefix + b"/") and not path.endswith(b"/websocket")


class FirstLine(asyncio.Protocol):
    """A connection until its request line is in: then the chosen server's protocol."""

    def __init__(
        self,
        websocket: Callable[[], asyncio.Protocol],
        http: Callable[[], asyncio.Protocol],
        prefix: bytes,
        protocol: ServerProtocol,
    ) -> None:
        # websockets' subprotocol selection checks that the connection it made holds its
        # sans-I/O protocol: this object is that connection until the hand-over.
        self.protocol = protocol
        self._websocket = websocket
        self._http = http
        self._prefix = prefix
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(
            REQUEST_LINE_SECONDS, self._transport.abort
        )

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:  # handed over already
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_REQUEST_LINE:
                transport.abort()
            return
        line = bytes(self._buffer[:end])
        chosen = self._http() if wants_http(line, self._prefix) else self._websocket()
        self._cancel_timer()
        data, self._buffer = bytes(self._buffer), bytearray()
        # websockets' subprotocol selection keeps this object for the connection's life:
        # it lets go of everything but the sans-I/O protocol.
        self._transport = None
        del self._websocket, self._http
        transport.set_protocol(chosen)
        chosen.connection_made(transport)
        chosen.data_received(data)

    def eof_received(self) -> bool | None:
        return None  # closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def sharing(
    socket_class: type[ServerConnection], http: Callable[[], asyncio.Protocol], prefix: str
) -> type[ServerConnection]:
    """websockets' ``create_connection``: a :class:`FirstLine` in front of ``socket_class``."""
    encoded = prefix.encode()

    def create(protocol: ServerProtocol, server: Server, **kwargs: Any) -> FirstLine:
        def websocket() -> asyncio.Protocol:
            return socket_class(protocol, server, **kwargs)

        return FirstLine(websocket, http, encoded, protocol)

    # websockets types the factory as a class; any callable making the connection will do.
    return cast(type[ServerConnection], create)
