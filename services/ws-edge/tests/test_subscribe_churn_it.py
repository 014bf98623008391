"""SUBSCRIBE churn: one WebSocket message of SUBSCRIBE/UNSUBSCRIBE pairs, each asking for a
replay from seq 0. The edge meters those frames (ERROR and close past the burst), runs one
history fetch at a time per connection and cancels a fetch whose subscription went away, so
the flood costs a few history pages, not one per pair; another user's resume meanwhile gets
its whole replay."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY

from .conftest import WITHIN

PAGES = "chat_edge_history_pages_total"


def churn(topic: str, pairs: int) -> str:
    frames = []
    for i in range(pairs):
        frames.append(f"SUBSCRIBE\nid:s{i}\ndestination:{topic}\nx-resume-after-seq:0\n\n\x00")
        frames.append(f"UNSUBSCRIBE\nid:s{i}\n\n\x00")
    return "".join(frames)


async def test_a_subscribe_flood_is_cut_and_costs_few_history_fetches(world: Any) -> None:
    flooded, other = await world.chat(), await world.chat()
    for i in range(40):
        await world.rest_send(flooded, flooded.alice, f"f{i}")
        await world.rest_send(other, other.bob, f"o{i}")
    edge = await world.edge(subscribes_burst=60, subscribes_per_second=1.0)
    pages_before = REGISTRY.get_sample_value(PAGES) or 0
    flooder = await world.raw(edge, flooded.alice_token)
    await flooder.socket.send(churn(flooded.topic, 300))  # 600 frames in one message
    bob = await world.raw(edge, other.bob_token)
    await bob.subscribe(other.topic, ("x-resume-after-seq", "0"))
    replayed = [await bob.next_frame() for _ in range(40)]
    assert [int(f.header("x-seq") or 0) for f in replayed] == list(range(1, 41))
    error = None
    async with asyncio.timeout(WITHIN):
        while error is None:
            frame = await flooder.next_frame()
            if frame.command == "ERROR":
                error = frame
    assert "too many SUBSCRIBE" in (error.header("message") or "")
    await asyncio.sleep(0.3)  # a negative check: flood fetches still running would add pages
    pages = (REGISTRY.get_sample_value(PAGES) or 0) - pages_before
    assert pages <= 5, pages  # Bob's replay and at most a few of the flood's 30 pairs
