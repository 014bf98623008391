"""A token in the ``access_token`` query parameter never reaches a log record, at any level:
with a valid token, an invalid one, on a refused Origin and on an unknown path. Every record
the process emits at DEBUG and above while an edge starts, serves and stops is examined."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from chat_stomp.frames import Frame
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from chat_testing.stomp import StompClient

# The test's own client logs its request line (with the token) at DEBUG: that proves the
# capture sees DEBUG records, and those records are the client's, not the edge's.
CLIENT_LOGGER = "test.stomp-client"


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self, *, client: bool) -> list[str]:
        """Each record as a handler would write it, plus everything the record carries."""
        return [
            f"{self.format(record)} {record.__dict__!r}"
            for record in self.records
            if (record.name == CLIENT_LOGGER) is client
        ]


@contextlib.contextmanager
def every_log_record() -> Iterator[Capture]:
    """Capture every record, the root logger at DEBUG (a LOG_LEVEL=DEBUG deployment)."""
    capture = Capture()
    root = logging.getLogger()
    level = root.level
    hidden = [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    ]
    root.addHandler(capture)
    for logger in hidden:
        logger.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.setLevel(level)
        root.removeHandler(capture)
        for logger in hidden:
            logger.removeHandler(capture)


async def plain_get(port: int, target: str) -> bytes:
    """The status line of a GET sent over a bare socket (an HTTP client library would log
    the URL on the test's side)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(10):
            return (await reader.readline()).rstrip()
    finally:
        writer.close()


async def stomp_connect(port: int, query: str) -> Frame:
    """Open ``/ws?{query}``, send CONNECT and return the edge's answer."""
    socket = await connect(
        f"ws://127.0.0.1:{port}/ws?{query}",
        subprotocols=[Subprotocol("v12.stomp")],
        logger=logging.getLogger(CLIENT_LOGGER),
    )
    client = StompClient(socket)
    try:
        await client.write(
            Frame("CONNECT", (("accept-version", "1.2"), ("host", "/"), ("heart-beat", "0,0")))
        )
        answer = await client.next_frame(within=10)
        if answer.command == "CONNECTED":
            await client.subscribe("/user/queue/messages", ("receipt", "r-1"))
            assert (await client.next_frame(within=10)).command == "RECEIPT"
            await client.write(Frame("DISCONNECT"))
        return answer
    finally:
        await client.close()


@pytest.mark.parametrize("kind", ["valid", "invalid"])
async def test_an_access_token_never_reaches_the_logs(world: Any, kind: str) -> None:
    if kind == "valid":
        secret = world.token(f"logs.{uuid.uuid4().hex[:8]}@example.com")
    else:
        secret = f"SECRET-{uuid.uuid4().hex}"
    query = f"access_token={secret}"
    with every_log_record() as capture:
        async with world.edge_context(allowed_origins=("http://app.example",)) as edge:
            port = edge.edge_server.settings.port
            answer = await stomp_connect(port, query)
            assert answer.command == ("CONNECTED" if kind == "valid" else "ERROR")
            with pytest.raises(InvalidStatus):
                await connect(
                    f"ws://127.0.0.1:{port}/ws?{query}",
                    origin=Origin("http://evil.example"),
                    logger=logging.getLogger(CLIENT_LOGGER),
                )
            assert await plain_get(port, f"/nope?{query}") == b"HTTP/1.1 404 Not Found"
    assert any(secret in text for text in capture.texts(client=True))
    edge_side = capture.texts(client=False)
    assert edge_side, "the edge should have logged something at DEBUG"
    leaks = [text for text in edge_side if secret in text]
    assert leaks == []
