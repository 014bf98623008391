"""Baseline: RabbitMQ's own Web-STOMP plugin relaying the same workload, with no persistence,
no authentication and no storage: a topic per session, both users subscribed, one sending."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import workload

from chat_testing.stomp import StompClient
from ws_edge.stomp.frames import Frame

URL = "ws://127.0.0.1:15674/ws"


@contextlib.asynccontextmanager
async def clients(sessions: int) -> AsyncIterator[list[tuple[int, StompClient]]]:
    opened: list[tuple[int, StompClient]] = []
    try:
        for session in range(sessions):
            for _ in range(2):
                client = await StompClient.open(
                    URL, headers=(("login", "guest"), ("passcode", "guest"))
                )
                opened.append((session, client))
        yield opened
    finally:
        await asyncio.gather(*(c.close() for _, c in opened), return_exceptions=True)


async def measure(sessions: int, rate: float, seconds: float) -> workload.Outcome:
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench-{run_id}"
    async with clients(sessions) as receivers:
        for session, client in receivers:
            await client.subscribe(f"/topic/{topic}.{session}")
        await asyncio.sleep(0.5)  # let the subscriptions settle
        senders = {s: c for s, c in receivers}  # the second user of each session sends

        async def send(session: int, number: int, text: str) -> None:
            await senders[session].send(f"/topic/{topic}.{session}", text.encode())

        def extract(frame: Frame) -> workload.Delivery | None:
            # one publisher per topic, its sends in number order on one connection
            return workload.parse_body(frame.body.decode(), run_id)

        return await workload.run(
            receivers, sessions, send, extract, run_id=run_id, rate=rate, seconds=seconds
        )


if __name__ == "__main__":
    result = asyncio.run(measure(20, 200, 3))
    print(result.summary())
