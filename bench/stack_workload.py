"""The same workload through the chat stack: every user on a STOMP connection through the
gateway subscribed to its session's topic; messages sent over REST (POST /api/chat/message) or
over STOMP (SEND /app/chat.send, acknowledged by its RECEIPT)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import httpx
import msgspec
import workload

from chat_testing.stomp import StompClient
from ws_edge.stomp.frames import Frame


@dataclass(frozen=True)
class Stack:
    gateway: str  # http://127.0.0.1:PORT
    flairbit: str

    @property
    def ws(self) -> str:
        return self.gateway.replace("http://", "ws://") + "/ws"


async def token(http: httpx.AsyncClient, stack: Stack, email: str) -> str:
    answer = await http.post(f"{stack.flairbit}/dev/token", json={"email": email})
    answer.raise_for_status()
    return str(answer.json()["token"])


@dataclass
class Session:
    id: str
    tokens: tuple[str, str]


@contextlib.asynccontextmanager
async def sessions_and_clients(
    stack: Stack, http: httpx.AsyncClient, count: int, run_id: str
) -> AsyncIterator[tuple[list[Session], list[tuple[int, StompClient]]]]:
    sessions: list[Session] = []
    for i in range(count):
        a, b = f"a{i}.{run_id}@bench.example", f"b{i}.{run_id}@bench.example"
        ta, tb = await token(http, stack, a), await token(http, stack, b)
        answer = await http.post(
            f"{stack.gateway}/api/chat/init",
            json={"toEmail": b, "intent": "dating"},
            headers={"Authorization": f"Bearer {ta}"},
        )
        answer.raise_for_status()
        sessions.append(Session(answer.json()["sessionId"], (ta, tb)))
    opened: list[tuple[int, StompClient]] = []
    try:
        for index, session in enumerate(sessions):
            for tok in session.tokens:
                client = await StompClient.open(f"{stack.ws}?access_token={tok}")
                await client.subscribe(f"/topic/session.{session.id}")
                opened.append((index, client))
        await asyncio.sleep(0.5)
        yield sessions, opened
    finally:
        await asyncio.gather(*(c.close() for _, c in opened), return_exceptions=True)


def extractor(run_id: str) -> workload.Extractor:
    def extract(frame: Frame) -> workload.Delivery | None:
        if frame.header("x-event") != "message":
            return None
        message = msgspec.json.decode(frame.body)
        # a session's concurrent sends are ordered by the seq their commits got
        return workload.parse_body(message["content"], run_id, order=int(message["seq"]))

    return extract


async def measure_rest(
    stack: Stack, sessions: int, rate: float, seconds: float
) -> workload.Outcome:
    run_id = uuid.uuid4().hex[:8]
    # The senders use aiohttp: its C-accelerated client costs the shared CPU a fraction of what
    # httpx's does per request, so the client takes less from the stack it measures.
    async with (
        httpx.AsyncClient(timeout=30) as http,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=128),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as senders,
        sessions_and_clients(stack, http, sessions, run_id) as (chats, receivers),
    ):
        url = f"{stack.gateway}/api/chat/message"

        async def warm(i: int) -> None:
            token = chats[i % len(chats)].tokens[0]
            async with senders.get(
                f"{stack.gateway}/api/chat/sessions", headers={"Authorization": f"Bearer {token}"}
            ) as answer:
                await answer.read()

        # open the pooled connections (client -> gateway -> message-svc) first
        await asyncio.gather(*(warm(i) for i in range(64)))

        async def send(session: int, number: int, text: str) -> None:
            chat = chats[session]
            payload = {"sessionId": chat.id, "content": text, "clientMessageId": str(uuid.uuid4())}
            async with senders.post(
                url,
                data=msgspec.json.encode(payload),
                headers={
                    "Authorization": f"Bearer {chat.tokens[number % 2]}",
                    "Content-Type": "application/json",
                },
            ) as answer:
                await answer.read()
                answer.raise_for_status()

        return await workload.run(
            receivers,
            sessions,
            send,
            extractor(run_id),
            run_id=run_id,
            rate=rate,
            seconds=seconds,
        )


async def measure_stomp(
    stack: Stack, sessions: int, rate: float, seconds: float
) -> workload.Outcome:
    """Sends over /app/chat.send on separate sender connections, each send awaiting its
    RECEIPT (the edge answers it once message-svc committed the message)."""
    run_id = uuid.uuid4().hex[:8]
    async with (
        httpx.AsyncClient(timeout=30) as http,
        sessions_and_clients(stack, http, sessions, run_id) as (chats, receivers),
    ):
        senders: list[StompClient] = []
        waiting: dict[str, asyncio.Future[None]] = {}

        async def read_receipts(client: StompClient) -> None:
            async for frame in client.frames():
                receipt = frame.header("receipt-id")
                if frame.command == "RECEIPT" and receipt in waiting:
                    waiting.pop(receipt).set_result(None)

        readers = []
        try:
            for chat in chats:
                sender = await StompClient.open(f"{stack.ws}?access_token={chat.tokens[0]}")
                senders.append(sender)
                readers.append(asyncio.create_task(read_receipts(sender)))

            async def send(session: int, number: int, text: str) -> None:
                receipt = f"r-{session}-{number}"
                done = asyncio.get_running_loop().create_future()
                waiting[receipt] = done
                payload = {
                    "sessionId": chats[session].id,
                    "content": text,
                    "clientMessageId": str(uuid.uuid4()),
                }
                await senders[session].send(
                    "/app/chat.send", msgspec.json.encode(payload), ("receipt", receipt)
                )
                await asyncio.wait_for(done, 30)

            return await workload.run(
                receivers,
                sessions,
                send,
                extractor(run_id),
                run_id=run_id,
                rate=rate,
                seconds=seconds,
            )
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*(s.close() for s in senders), return_exceptions=True)
