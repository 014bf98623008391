"""Gaps in a session's seqs on a topic subscription, with the real RabbitMQ, session-svc and
message-svc: the events message-svc stored in its outbox are published by hand, out of order,
repeated or missing, as the relay may publish them; the subscriber sees each seq once, in
order, the missing ones fetched from history. A history that cannot be reached holds the
subscription up only for the bounded retries."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from chat_stomp.frames import Frame
from prometheus_client import REGISTRY

from chat_testing.tcpproxy import TcpProxy

Event = tuple[str, dict[str, Any], bytes]


def fills(outcome: str) -> float:
    return REGISTRY.get_sample_value("chat_ws_gap_fills_total", {"outcome": outcome}) or 0


async def outbox(world: Any, chat: Any) -> dict[int, Event]:
    """The event each of the session's outbox rows holds (routing key, headers, payload),
    by seq, as the relay would publish it."""
    rows = await world.pool.fetch(
        "SELECT routing_key, headers, payload FROM chat_message_outbox WHERE session_id = $1",
        chat.id,
    )
    events: dict[int, Event] = {}
    for row in rows:
        headers = json.loads(row["headers"])
        events[int(headers["x-seq"])] = (row["routing_key"], headers, bytes(row["payload"]))
    return events


async def stored(world: Any, chat: Any, count: int) -> dict[int, Event]:
    """Send ``count`` messages with the relay stopped; their events, by seq."""
    for i in range(1, count + 1):
        await world.rest_send(chat, chat.alice, f"m{i}")
    events = await outbox(world, chat)
    assert sorted(events) == list(range(1, count + 1))
    return events


async def publish(world: Any, events: dict[int, Event], *seqs: int) -> None:
    for seq in seqs:
        await world.publish(*events[seq])


def seq_and_content(frame: Frame) -> tuple[int, str]:
    assert frame.header("x-event") == "message"
    return int(frame.header("x-seq") or 0), json.loads(frame.body)["content"]


async def subscribed(world: Any, edge: Any, chat: Any) -> Any:
    bob = await world.raw(edge, chat.bob_token)
    await bob.subscribe(chat.topic, ("receipt", "sub"))
    assert (await bob.next_frame()).command == "RECEIPT"
    return bob


async def test_a_late_row_and_a_row_only_in_history_reach_the_subscriber_once_in_order(
    world: Any,
) -> None:
    chat = await world.chat()
    events = await stored(world, chat, 5)
    edge = await world.edge()
    bob = await subscribed(world, edge, chat)
    filled = fills("filled")
    typing = {"x-event": "typing", "x-session-id": str(chat.id)}
    await publish(world, events, 1)
    assert seq_and_content(await bob.next_frame()) == (1, "m1")
    # The relay's pipelined 3 confirmed while 2 was nacked: 3, then 2 and 3 republished.
    await publish(world, events, 3)
    await world.publish(events[1][0], typing, b'{"typing":true}')
    await publish(world, events, 2, 3)
    # 5 goes out while 4 is late (requeued): only history has 4 for now.
    await publish(world, events, 5)
    frames = [await bob.next_frame() for _ in range(5)]
    messages = [seq_and_content(f) for f in frames if f.header("x-event") == "message"]
    assert messages == [(2, "m2"), (3, "m3"), (4, "m4"), (5, "m5")]
    assert [f.header("x-event") for f in frames].count("typing") == 1
    assert len({f.header("message-id") for f in frames if f.header("x-seq")}) == 4
    assert fills("filled") == filled + 2  # 2, then 4, from history
    await publish(world, events, 4, 5, 1)  # the late copies: already delivered
    with pytest.raises(TimeoutError):
        await bob.next_frame(within=0.5)
    await world.rest_send(chat, chat.alice, "m6")
    world.relay.start()  # publishes 6 (and the rows still pending: 1..5 again)
    frame = await bob.next_frame()
    assert seq_and_content(frame) == (6, "m6")
    with pytest.raises(TimeoutError):
        await bob.next_frame(within=0.5)


async def test_a_resumed_subscription_fills_the_gaps_after_its_replay(world: Any) -> None:
    chat = await world.chat()
    await stored(world, chat, 6)
    edge = await world.edge()
    bob = await world.raw(edge, chat.bob_token)
    await bob.subscribe(chat.topic, ("x-resume-after-seq", "2"), ("receipt", "sub"))
    assert (await bob.next_frame()).command == "RECEIPT"
    got = [seq_and_content(await bob.next_frame()) for _ in range(4)]  # the replay: 3..6
    assert got == [(i, f"m{i}") for i in range(3, 7)]
    for i in (7, 8, 9):
        await world.rest_send(chat, chat.alice, f"m{i}")
    later = await outbox(world, chat)
    await publish(world, later, 9, 6, 7)  # 8 only in history; 6 replayed already
    got = [seq_and_content(await bob.next_frame()) for _ in range(3)]
    assert got == [(7, "m7"), (8, "m8"), (9, "m9")]
    with pytest.raises(TimeoutError):
        await bob.next_frame(within=0.5)


async def test_when_history_cannot_be_reached_the_later_messages_still_arrive(
    world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    chat = await world.chat()
    events = await stored(world, chat, 3)
    host, port = world.message_url.removeprefix("http://").split(":")
    async with TcpProxy(host, int(port)) as proxy:
        edge = await world.edge(
            message_svc_url=f"http://127.0.0.1:{proxy.port}",
            gap_fill_attempts=3,
            gap_fill_backoff_seconds=0.05,
        )
        bob = await subscribed(world, edge, chat)
        await publish(world, events, 1)
        assert seq_and_content(await bob.next_frame()) == (1, "m1")
        gave_up = fills("gave_up")
        proxy.cut()
        with caplog.at_level(logging.WARNING, logger="ws_edge.client"):
            await publish(world, events, 3)
            frame = await bob.next_frame(within=5)  # three attempts, then what there is
        assert seq_and_content(frame) == (3, "m3")
        assert fills("gave_up") == gave_up + 1
        assert any("seqs 2..2" in r.getMessage() for r in caplog.records)
        proxy.restore()
        await publish(world, events, 2)  # too late: the client has 3 already
        with pytest.raises(TimeoutError):
            await bob.next_frame(within=0.5)


async def test_a_gap_of_edits_and_deletes_is_filled_with_their_kinds(world: Any) -> None:
    """The missing seqs are an edit and a delete (rows late on the broker): the fill reads the
    session's events and delivers each with the x-event it has live, in seq order."""
    chat = await world.chat()
    first = await world.rest_send(chat, chat.alice, "m1")
    second = await world.rest_send(chat, chat.alice, "m2")
    alice = {"Authorization": f"Bearer {chat.alice_token}"}
    path = f"/api/chat/{chat.id}/messages"
    edited = await world.http.patch(
        f"{path}/{first['messageId']}",
        json={"content": "m1, edited", "clientMessageId": str(uuid.uuid4())},
        headers=alice,
    )
    deleted = await world.http.request(
        "DELETE",
        f"{path}/{second['messageId']}",
        json={"clientMessageId": str(uuid.uuid4())},
        headers=alice,
    )
    assert (edited.status_code, deleted.status_code) == (200, 200)
    await world.rest_send(chat, chat.alice, "m5")
    events = await outbox(world, chat)
    assert [events[s][1]["x-event"] for s in sorted(events)] == [
        "message",
        "message",
        "edit",
        "delete",
        "message",
    ]
    edge = await world.edge()
    bob = await subscribed(world, edge, chat)
    filled = fills("filled")
    await publish(world, events, 1, 2, 5)  # 3 and 4 only in the stored events for now
    frames = [await bob.next_frame() for _ in range(5)]
    assert [(f.header("x-event"), f.header("x-seq")) for f in frames] == [
        ("message", "1"),
        ("message", "2"),
        ("edit", "3"),
        ("delete", "4"),
        ("message", "5"),
    ]
    assert json.loads(frames[2].body) == edited.json()
    assert json.loads(frames[3].body) == deleted.json()
    assert fills("filled") == filled + 1
    await publish(world, events, 3, 4)  # the late rows: already delivered
    with pytest.raises(TimeoutError):
        await bob.next_frame(within=0.5)
