"""x-resume-after-seq against the real message-svc: the replay (several history pages,
slowed by a proxy) overlaps live events, and the client sees every later seq once, in order;
two replays on one connection, each paced by the connection's outbound buffer, both finish."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from prometheus_client import REGISTRY

from chat_testing.tcpproxy import TcpProxy

DROPPED = "chat_ws_resume_duplicates_total"


async def test_resume_misses_nothing_and_duplicates_nothing_across_the_seam(world: Any) -> None:
    chat = await world.chat()
    world.relay.start()
    for i in range(1, 206):  # more than one history page (200)
        await world.rest_send(chat, chat.alice, f"m{i}")
    host, port = world.message_url.removeprefix("http://").split(":")
    async with TcpProxy(host, int(port)) as proxy:
        proxy.latency = 0.3  # every history page takes a while: live events arrive meanwhile
        edge = await world.edge(message_svc_url=f"http://127.0.0.1:{proxy.port}")
        bob = await world.raw(edge, chat.bob_token)
        await bob.subscribe(chat.topic, ("x-resume-after-seq", "3"), ("receipt", "r"))
        assert (await bob.next_frame()).command == "RECEIPT"  # bound: live events are held

        async def keep_sending() -> None:
            for i in range(206, 221):
                await world.rest_send(chat, chat.alice, f"m{i}")
                await asyncio.sleep(0.05)

        dropped_before = REGISTRY.get_sample_value(DROPPED) or 0
        sender = asyncio.create_task(keep_sending())
        frames = [await bob.next_frame() for _ in range(217)]
        await sender
        seqs = [int(f.header("x-seq") or 0) for f in frames]
        assert seqs == list(range(4, 221))  # every seq after 3, once, in order
        assert [json.loads(f.body)["content"] for f in frames[-3:]] == ["m218", "m219", "m220"]
        assert len({f.header("message-id") for f in frames}) == 217
        assert (
            REGISTRY.get_sample_value(DROPPED) or 0
        ) > dropped_before  # the seam had duplicates to drop
        await world.rest_send(chat, chat.alice, "after the seam")
        assert (await bob.next_frame()).header("x-seq") == "221"


async def test_resume_from_the_last_seq_goes_straight_to_live(world: Any) -> None:
    chat = await world.chat()
    world.relay.start()
    for i in range(3):
        await world.rest_send(chat, chat.alice, f"m{i}")
    edge = await world.edge()
    bob = await world.raw(edge, chat.bob_token)
    await bob.subscribe(chat.topic, ("x-resume-after-seq", "3"), ("receipt", "r"))
    assert (await bob.next_frame()).command == "RECEIPT"
    await world.rest_send(chat, chat.alice, "live")
    frame = await bob.next_frame()
    assert (frame.header("x-seq"), json.loads(frame.body)["content"]) == ("4", "live")


async def test_a_bad_resume_point_is_a_protocol_error(world: Any) -> None:
    chat = await world.chat()
    edge = await world.edge()
    bob = await world.raw(edge, chat.bob_token)
    await bob.subscribe(chat.topic, ("x-resume-after-seq", "-1"))
    frame = await bob.next_frame()
    assert frame.command == "ERROR"
    assert "x-resume-after-seq" in (frame.header("message") or "")


async def test_two_resumes_over_a_large_backlog_on_one_connection_both_finish(world: Any) -> None:
    """Bob resumes two sessions at once, each with a backlog several times the edge's outbound
    buffer: both replays wait for room in the same buffer, and both must go on to the end
    (once only the latest waiter woke, and the other subscription froze)."""
    first = await world.chat()
    second = await world.chat(bob=first.bob)
    world.relay.start()
    filler = "x" * 1500
    for i in range(1, 41):
        await world.rest_send(first, first.alice, f"a{i} {filler}")
        await world.rest_send(second, second.alice, f"b{i} {filler}")
    edge = await world.edge(max_outbound_bytes=16 * 1024)  # room below 8 KiB: ~5 frames
    bob = await world.raw(edge, first.bob_token)
    await bob.subscribe(first.topic, ("x-resume-after-seq", "0"))
    await bob.subscribe(second.topic, ("x-resume-after-seq", "0"))
    seqs: dict[str, list[int]] = {first.topic: [], second.topic: []}
    for _ in range(80):
        frame = await bob.next_frame(within=5)
        assert frame.command == "MESSAGE", (frame.command, frame.header("message"))
        seqs[frame.header("destination") or ""].append(int(frame.header("x-seq") or 0))
    assert seqs == {first.topic: list(range(1, 41)), second.topic: list(range(1, 41))}
    await world.rest_send(first, first.alice, "live after both replays")
    live = await bob.next_frame()
    assert (live.header("destination"), live.header("x-seq")) == (first.topic, "41")
