"""A small asyncio STOMP 1.2 client over WebSocket for tests and benchmarks (the product's own
codec, the websockets library for the socket): connect, subscribe, send, read frames."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterable

from chat_stomp.frames import SERVER_COMMANDS, Frame, serialize
from chat_stomp.parser import FrameParser, Limits
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

BENCH_LIMITS = Limits(max_frame_bytes=1 << 20, max_body=1 << 20, max_headers=64)
_ids = itertools.count(1)


class FrameWriter:
    """The client frames built on ``write`` (each transport's client implements it)."""

    async def write(self, frame: Frame) -> None:
        raise NotImplementedError

    async def subscribe(self, destination: str, *headers: tuple[str, str]) -> str:
        sub_id = f"sub-{next(_ids)}"
        await self.write(
            Frame("SUBSCRIBE", (("id", sub_id), ("destination", destination), *headers))
        )
        return sub_id

    async def send(self, destination: str, body: bytes, *headers: tuple[str, str]) -> None:
        await self.write(
            Frame(
                "SEND",
                (("destination", destination), ("content-type", "application/json"), *headers),
                body,
            )
        )


class StompClient(FrameWriter):
    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._parser = FrameParser(BENCH_LIMITS, commands=SERVER_COMMANDS)

    @property
    def socket(self) -> ClientConnection:
        return self._socket

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        host: str = "/",
        handshake_headers: dict[str, str] | None = None,
        subprotocols: Iterable[str] = ("v12.stomp",),
    ) -> StompClient:
        """Open the socket and CONNECT; raise ConnectionError with the ERROR's message."""
        socket = await connect(
            url,
            subprotocols=[Subprotocol(p) for p in subprotocols],
            additional_headers=handshake_headers,
            max_size=1 << 20,
            ping_interval=None,
        )
        client = cls(socket)
        try:
            await client.write(
                Frame(
                    "CONNECT",
                    (("accept-version", "1.2"), ("host", host), ("heart-beat", "0,0"), *headers),
                )
            )
            reply = await client.next_frame()
        except BaseException:
            await socket.close()
            raise
        if reply.command != "CONNECTED":
            await socket.close()
            raise ConnectionError(f"STOMP CONNECT refused: {reply.header('message')}")
        return client

    async def write(self, frame: Frame) -> None:
        await self._socket.send(serialize(frame).decode("utf-8"))

    async def frames(self) -> AsyncIterator[Frame]:
        async for data in self._socket:
            raw = data.encode("utf-8") if isinstance(data, str) else data
            for event in self._parser.feed(raw):
                if isinstance(event, Frame):
                    yield event

    async def next_frame(self, within: float = 10.0) -> Frame:
        async with asyncio.timeout(within):
            async for frame in self.frames():
                return frame
        raise ConnectionError("the connection closed")

    async def close(self) -> None:
        await self._socket.close()
