"""POST /api/chat/messages through the gateway of the whole stack: a hundred messages in one
request (over the gateway's usual 64 KiB body limit), mixed successes, replays and per-item
failures (including the send limit, counted per item), and the stored ones delivered live, in
order, to the peer on STOMP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from chat_testing.stomp import StompClient

from .conftest import Stack, open_chat

pytestmark = pytest.mark.e2e


def item(session: str, content: str, cid: str | None = None) -> dict[str, str]:
    return {"sessionId": session, "content": content, "clientMessageId": cid or str(uuid.uuid4())}


async def test_a_bulk_send_through_the_gateway_is_answered_per_item_and_delivered_in_order(
    stack: Stack,
) -> None:
    chat = open_chat(stack, "bulk")
    stranger = open_chat(stack, "bulk-stranger")
    bob = await StompClient.open(
        stack.gateway.replace("http://", "ws://") + "/ws",
        headers=(("passcode", chat.bob_token),),
    )
    try:
        await bob.subscribe(f"/topic/session.{chat.id}", ("receipt", "bound"))
        assert (await bob.next_frame()).command == "RECEIPT"
        filler = "x" * 1000  # 100 items of 1 KB: over the gateway's 64 KiB default body limit
        repeated = str(uuid.uuid4())
        items: list[Any] = [item(chat.id, f"{i} {filler}") for i in range(100)]
        items[7] = item(chat.id, "", None)  # blank
        items[8] = item(stranger.id, "not mine")  # Alice is not in that session
        items[9] = item(chat.id, "once", repeated)
        items[10] = item(chat.id, "once", repeated)  # a replay inside the request
        items[11] = {"sessionId": chat.id, "content": "no id"}  # invalid item
        async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as client:
            started = time.monotonic()
            answer = await client.post(
                "/api/chat/messages",
                json={"messages": items},
                headers={"Authorization": f"Bearer {chat.alice_token}"},
            )
            took = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [r["status"] for r in results[7:12]] == [422, 403, 200, 200, 422]
        assert results[11]["problem"]["field"] == "clientMessageId"
        assert results[10]["replayed"] is True
        assert results[10]["message"]["messageId"] == results[9]["message"]["messageId"]
        # Each item spends one of Alice's send tokens (the stack's default burst is 20), in
        # request order: the items past her burst are refused, each on its own, but for one
        # now and then stored on a token refilled (10 a second) while the request ran.
        stored_at = [i for i, r in enumerate(results) if r["status"] == 200 and not r["replayed"]]
        limited_at = [i for i, r in enumerate(results) if r["status"] == 429]
        assert len(stored_at) >= 10
        assert limited_at
        first_refused = min(limited_at)
        assert first_refused >= 12  # the first eleven valid items fit in the burst
        refilled = [i for i in stored_at if i > first_refused]
        assert len(refilled) <= 1 + int(took * 10), (refilled, took)
        assert set(stored_at) | set(limited_at) | {7, 8, 10, 11} == set(range(100))
        assert {results[i]["problem"]["code"] for i in limited_at} == {"SEND_RATE_LIMITED"}
        stored = [results[i]["message"] for i in stored_at]
        assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1))
        delivered: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            while len(delivered) < len(stored):
                frame = await bob.next_frame()
                if frame.command == "MESSAGE":
                    delivered.append(json.loads(frame.body))
        assert [m["messageId"] for m in delivered] == [m["messageId"] for m in stored]
    finally:
        await bob.close()
