"""The real generator (Node.js) against a fake chat system with a known delay: one message
stalls 200 ms and the system handles sends one at a time, so the messages behind it queue.

An open-loop generator keeps sending on schedule while that message is stalled, and latency
measured from each message's scheduled send time shows the stall and the queue behind it in
p99 (a closed loop, or a clock started when the send went out, would hide both)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

import generator
import sweep

STALL = 0.2  # seconds
STALLED = 20  # the message number that stalls
RATE = 100.0


def stomp(command: str, headers: dict[str, str], body: str = "") -> str:
    lines = "".join(f"{k}:{v}\n" for k, v in headers.items())
    return f"{command}\n{lines}\n{body}\0"


def parse(text: str) -> list[tuple[str, dict[str, str], str]]:
    frames = []
    for raw in text.split("\0"):
        raw = raw.lstrip("\r\n")
        if not raw:
            continue
        head, _, body = raw.partition("\n\n")
        command, *lines = head.split("\n")
        headers = dict(line.split(":", 1) for line in lines if ":" in line)
        frames.append((command, headers, body))
    return frames


class FakeChat:
    """Enough of the chat's REST and STOMP contract for the generator: CONNECT, SUBSCRIBE
    with a receipt, ``SEND /app/chat.send`` with a receipt, ``POST /api/chat/message``; every
    stored message goes to the session topic's subscribers with ``x-seq``."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()  # one send at a time: a stall holds everything behind it
        self.seqs: dict[str, int] = {}
        self.topics: dict[str, list[web.WebSocketResponse]] = {}
        self.arrived: dict[int, float] = {}  # message number -> when its request arrived
        self.tasks: set[asyncio.Task[None]] = set()

    async def store(self, payload: dict[str, Any]) -> None:
        number = int(payload["content"].rsplit(":", 1)[1])
        self.arrived[number] = time.time()
        async with self.lock:
            if number == STALLED:
                await asyncio.sleep(STALL)
            session = payload["sessionId"]
            seq = self.seqs[session] = self.seqs.get(session, 0) + 1
            body = json.dumps({"sessionId": session, "seq": seq, "content": payload["content"]})
            destination = f"/topic/session.{session}"
            frame = stomp(
                "MESSAGE",
                {"destination": destination, "x-event": "message", "x-seq": str(seq)},
                body,
            )
            for socket in self.topics.get(destination, []):
                await socket.send_str(frame)

    async def rest(self, request: web.Request) -> web.Response:
        await self.store(await request.json())
        return web.json_response({"ok": True})

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(protocols=("v12.stomp",))
        await socket.prepare(request)
        async for message in socket:
            for command, headers, body in parse(message.data):
                if command == "CONNECT":
                    await socket.send_str(stomp("CONNECTED", {"version": "1.2"}))
                elif command == "SUBSCRIBE":
                    self.topics.setdefault(headers["destination"], []).append(socket)
                    await socket.send_str(stomp("RECEIPT", {"receipt-id": headers["receipt"]}))
                elif command == "SEND":  # read on while it is stored, as a server would
                    task = asyncio.create_task(self.send(socket, body, headers["receipt"]))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
        return socket

    async def send(self, socket: web.WebSocketResponse, body: str, receipt: str) -> None:
        await self.store(json.loads(body))
        await socket.send_str(stomp("RECEIPT", {"receipt-id": receipt}))


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeChat, str]]:
    chat = FakeChat()
    app = web.Application()
    app.router.add_post("/api/chat/message", chat.rest)
    app.router.add_get("/ws", chat.ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield chat, f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


SESSIONS = [
    generator.SessionSpec(i, f"/topic/session.s{i}", f"s{i}", (f"ta{i}", f"tb{i}"))
    for i in range(4)
]


def nothing() -> dict[int, str]:
    return {}


@pytest.mark.parametrize("mode", ["rest", "stomp"])
async def test_a_stalled_send_shows_in_p99_and_the_schedule_goes_on(
    fake: tuple[FakeChat, str], mode: str
) -> None:
    chat, address = fake
    system = sweep.System("fake", nothing, ())
    timing = sweep.Timing(warmup=0.0, seconds=1.0, drain=3.0, lead=0.3)
    async with generator.started(
        mode, SESSIONS, ws_url=f"ws://{address}/ws", http_url=f"http://{address}"
    ) as gen:
        started = time.time()
        row = await sweep.measure(gen, system, RATE, timing)
    assert (row["sent"], row["acknowledged"], row["lost"]) == (100, 100, 0)
    assert (row["duplicated"], row["unexpected"], row["out_of_order"]) == (0, 0, 0)
    # the stalled message reached both receivers >= 200 ms after it was due: p99 of the 200
    # deliveries (the second highest) holds it
    assert row["p99_ms"] >= STALL * 1000
    assert row["max_ms"] >= STALL * 1000
    assert row["p50_ms"] < STALL * 1000 / 2  # the rest were not held by it
    # open loop: the messages due while the stalled one was held were sent meanwhile, not after
    # its answer (a closed loop would send them >= STALL after it); the margin is for a busy
    # machine, whose scheduler may run the generator a little late
    first = min(chat.arrived.values())
    behind = range(STALLED + 1, STALLED + 6)  # due within 50 ms of the stalled one
    released = chat.arrived[STALLED] + STALL
    assert all(chat.arrived[n] < released for n in behind), [
        round(chat.arrived[n] - chat.arrived[STALLED], 3) for n in behind
    ]
    assert first >= started
