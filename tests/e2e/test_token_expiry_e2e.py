"""A user's token expires while their WebSocket is open, in the middle of a conversation: the
edge closes the connection with a clear ERROR; the client signs in again, reconnects with
``x-resume-after-seq`` and gets every message, each once, in order (counted against what the
sender was acknowledged)."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from chat_testing.stomp import StompClient

from .conftest import Stack, open_chat

pytestmark = pytest.mark.e2e


def short_token(stack: Stack, email: str, seconds: int) -> str:
    answer = httpx.post(
        f"{stack.flairbit}/dev/token", json={"email": email, "ttlSeconds": seconds}, timeout=5
    )
    answer.raise_for_status()
    return str(answer.json()["token"])


async def test_an_expired_token_closes_with_an_error_and_a_resume_misses_nothing(
    stack: Stack,
) -> None:
    chat = open_chat(stack, "expiry")
    url = stack.gateway.replace("http://", "ws://") + "/ws"
    topic = f"/topic/session.{chat.id}"
    acked: list[str] = []  # messageIds the sender was answered with, in send order

    async def send_for(seconds: float) -> None:
        async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as http:
            headers = {"Authorization": f"Bearer {chat.alice_token}"}
            for i in range(int(seconds / 0.1)):
                body = {
                    "sessionId": chat.id,
                    "content": f"m{i}",
                    "clientMessageId": str(uuid.uuid4()),
                }
                answer = await http.post("/api/chat/message", json=body, headers=headers)
                assert answer.status_code == 200, answer.text
                acked.append(answer.json()["messageId"])
                await asyncio.sleep(0.1)

    seen: dict[str, int] = {}  # messageId -> seq, first delivery
    last_seq = 0
    bob = await StompClient.open(url, headers=(("passcode", short_token(stack, chat.bob, 2)),))
    sender = asyncio.create_task(send_for(4.0))
    error = None
    try:
        await bob.subscribe(topic)
        async with asyncio.timeout(10):
            async for frame in bob.frames():
                if frame.command == "ERROR":
                    error = frame
                    break
                if frame.command == "MESSAGE":
                    message = json.loads(frame.body)
                    seen.setdefault(message["messageId"], message["seq"])
                    last_seq = max(last_seq, int(message["seq"]))
    finally:
        await bob.close()
    assert error is not None
    assert error.header("message") == "token expired"
    await sender  # messages went on being sent while Bob was away
    again = await StompClient.open(url, headers=(("passcode", stack.token(chat.bob)),))
    try:
        await again.subscribe(topic, ("x-resume-after-seq", str(last_seq)))
        async with asyncio.timeout(10):
            while not set(acked) <= set(seen):
                frame = await again.next_frame()
                if frame.command == "MESSAGE":
                    message = json.loads(frame.body)
                    assert (
                        message["messageId"] not in seen
                        or seen[message["messageId"]] == message["seq"]
                    )
                    seen.setdefault(message["messageId"], message["seq"])
    finally:
        await again.close()
    lost = [m for m in acked if m not in seen]
    assert not lost
    seqs = [seen[m] for m in acked]
    assert seqs == sorted(seqs) == list(range(seqs[0], seqs[0] + len(seqs)))
    assert last_seq < seqs[-1]  # the resume really carried messages sent while Bob was away
