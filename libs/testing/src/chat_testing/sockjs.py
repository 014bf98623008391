"""A small STOMP client over SockJS's ``xhr_streaming`` transport (aiohttp), for tests and
benchmarks: the same calls as :class:`chat_testing.stomp.StompClient` (write, subscribe,
send, next_frame, close) on one SockJS session: a streamed response carries the frames to the
client (opened again when the edge recycles it), each ``xhr_send`` carries one frame to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import aiohttp
from chat_stomp.frames import SERVER_COMMANDS, Frame, serialize
from chat_stomp.parser import FrameParser

from .stomp import BENCH_LIMITS, FrameWriter


class SockJSClosed(ConnectionError):
    """The session closed (``c[code,reason]``)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"SockJS session closed: {code} {reason}")
        self.code = code
        self.reason = reason


class SockJSStompClient(FrameWriter):
    def __init__(self, http: aiohttp.ClientSession, session_url: str, query: str) -> None:
        self._http = http
        self._url = session_url  # {base}/{server}/{session}
        self._query = query
        self._parser = FrameParser(BENCH_LIMITS, commands=SERVER_COMMANDS)
        self._frames: asyncio.Queue[Frame | SockJSClosed] = asyncio.Queue()
        self._opened = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.streams = 0  # streaming responses read so far

    @classmethod
    async def open(
        cls,
        http: aiohttp.ClientSession,
        base_url: str,
        *,
        token: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        url_token: str | None = None,
    ) -> SockJSStompClient:
        """Open a session at ``base_url`` (``http://host/ws``) and CONNECT (``token`` as
        passcode; ``url_token`` as ``?access_token=``); raise ConnectionError if refused."""
        query = f"?access_token={url_token}" if url_token else ""
        client = cls(http, f"{base_url}/000/{uuid.uuid4().hex[:12]}", query)
        client._reader = asyncio.create_task(client._read())
        try:
            async with asyncio.timeout(30):
                await client._opened.wait()
            credentials = (("passcode", token),) if token else ()
            await client.write(
                Frame(
                    "CONNECT",
                    (
                        ("accept-version", "1.2"),
                        ("host", "/"),
                        ("heart-beat", "0,0"),
                        *credentials,
                        *headers,
                    ),
                )
            )
            reply = await client.next_frame()
        except BaseException:
            await client.close()
            raise
        if reply.command != "CONNECTED":
            await client.close()
            raise ConnectionError(f"STOMP CONNECT refused: {reply.header('message')}")
        return client

    async def _read(self) -> None:
        """Read streams one after the other until the session closes."""
        try:
            while True:
                async with self._http.post(f"{self._url}/xhr_streaming{self._query}") as answer:
                    if answer.status != 200:
                        raise SockJSClosed(answer.status, await answer.text())
                    self.streams += 1
                    async for line in answer.content:
                        self._on_frame(line.rstrip(b"\n"))
        except SockJSClosed as closed:
            self._opened.set()
            self._frames.put_nowait(closed)
        except aiohttp.ClientError as exc:
            self._opened.set()
            self._frames.put_nowait(SockJSClosed(1006, str(exc)))

    def _on_frame(self, frame: bytes) -> None:
        if not frame or frame.startswith(b"hh") or frame == b"h":
            return  # the prelude, a heartbeat
        if frame == b"o":
            self._opened.set()
        elif frame.startswith(b"a"):
            for message in json.loads(frame[1:]):
                for parsed in self._parser.feed(message.encode()):
                    if isinstance(parsed, Frame):
                        self._frames.put_nowait(parsed)
        elif frame.startswith(b"c"):
            code, reason = json.loads(frame[1:])
            raise SockJSClosed(int(code), str(reason))

    async def write(self, frame: Frame) -> None:
        body = json.dumps([serialize(frame).decode("utf-8")])
        async with self._http.post(f"{self._url}/xhr_send{self._query}", data=body) as answer:
            if answer.status != 204:
                raise ConnectionError(f"xhr_send answered {answer.status}: {await answer.text()}")

    async def next_frame(self, within: float = 10.0) -> Frame:
        """The next STOMP frame; SockJSClosed once the session closed."""
        async with asyncio.timeout(within):
            item = await self._frames.get()
        if isinstance(item, SockJSClosed):
            self._frames.put_nowait(item)  # every later call sees it too
            raise item
        return item

    async def close(self) -> None:
        """Stop reading (the edge ends the session once no stream has been open for its
        disconnect delay)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
