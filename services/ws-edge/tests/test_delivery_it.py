"""Delivery with the real RabbitMQ, session-svc and message-svc: topics and user queues,
authorisation of subscriptions, /app/chat.send answered after the commit, typing, read and
delivered marks (individual and cumulative ACKs), the SEND rate limit, two edge instances
behind one exchange."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
import msgspec
import pytest
from chat_stomp.frames import Frame

from chat_common import amqp, routing
from chat_common.dto import SendCommand


async def next_where(client: Any, wanted: Any, within: float = 10.0) -> Frame:
    """The next frame ``wanted`` accepts, skipping the others."""
    async with asyncio.timeout(within):
        while True:
            frame: Frame = await client.next_frame(within)
            if wanted(frame):
                return frame


async def test_a_stored_message_reaches_the_topic_and_both_devices(world: Any) -> None:
    chat = await world.chat()
    world.relay.start()
    edge = await world.edge()
    topic = await world.stomp_py(edge, passcode=chat.bob_token)
    phone = await world.stomp_py(edge, passcode=chat.bob_token)
    laptop = await world.stomp_py(edge, passcode=chat.bob_token)
    topic.conn.subscribe(chat.topic, id="t", headers={"receipt": "sub-t"})
    phone.conn.subscribe("/user/queue/messages", id="m", headers={"receipt": "sub-m"})
    laptop.conn.subscribe("/user/queue/messages", id="m", headers={"receipt": "sub-m"})
    for client in (topic, phone, laptop):
        kind, frame = await client.next()
        assert kind == "RECEIPT"
    sent = await world.rest_send(chat, chat.alice, "hello")
    for client, destination in ((topic, chat.topic), (phone, "/user/queue/messages")):
        [frame] = await client.messages(1)
        assert frame.headers["destination"] == destination
        assert frame.headers["x-event"] == "message"
        assert frame.headers["x-session-id"] == str(chat.id)
        assert frame.headers["x-seq"] == str(sent["seq"])
        assert frame.headers["message-id"] == f"{chat.id}:{sent['seq']}"
        assert frame.headers["content-type"] == "application/json"
        assert json.loads(frame.body)["messageId"] == sent["messageId"]
    [frame] = await laptop.messages(1)
    assert json.loads(frame.body)["content"] == "hello"


async def test_only_participants_subscribe_and_unknown_destinations_are_errors(
    world: Any,
) -> None:
    chat = await world.chat()
    edge = await world.edge()
    eve = await world.raw(edge, world.token("eve@example.com"))
    await eve.subscribe(chat.topic, ("receipt", "r"))
    frame = await eve.next_frame()
    assert (frame.command, frame.header("message")) == (
        "ERROR",
        "not a participant of this session",
    )
    for destination in (f"/topic/session.{uuid.uuid4()}", "/topic/other", "/queue/x"):
        client = await world.raw(edge, chat.alice_token)
        await client.subscribe(destination, ("receipt", "r"))
        frame = await client.next_frame()
        assert frame.command == "ERROR", destination
    assert edge.edge.hub.key_count() == 0  # nothing stays bound for refused subscriptions


async def test_chat_send_publishes_the_verified_user_and_the_ack_brings_the_receipt(
    world: Any,
) -> None:
    """With SEND_ROUTE=queue. Nobody consumes this edge's send queue: the command is read
    from it, then answered as message-svc answers it."""
    chat = await world.chat()
    queue_name = f"{world.send_queue}.manual"
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    try:
        channel = await connection.channel()
        queue = await amqp.send_queue(channel, name=queue_name)  # as message-svc declares it
        edge = await world.edge(send_queue=queue_name, send_route="queue")
        alice = await world.raw(edge, chat.alice_token)
        await alice.subscribe("/user/queue/ack")
        cid = uuid.uuid4()
        body = {"sessionId": str(chat.id), "content": "over STOMP", "clientMessageId": str(cid)}
        await alice.send("/app/chat.send", json.dumps(body).encode(), ("receipt", "send-1"))
        message = None
        async with asyncio.timeout(10):
            while message is None:
                message = await queue.get(fail=False)
                await asyncio.sleep(0.02)
        await message.ack()
        command = msgspec.json.decode(message.body, type=SendCommand)
        assert message.headers["x-user"] == chat.alice
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert (command.user, command.session_id, command.client_message_id) == (
            chat.alice,
            chat.id,
            cid,
        )
        assert command.receipt == "send-1"
        assert command.connection in edge.edge.clients
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    with pytest.raises(TimeoutError):  # a negative check: no RECEIPT at publish time
        await alice.next_frame(within=0.5)
    stored = {"seq": 1, "clientMessageId": str(cid), "content": "over STOMP"}
    await world.publish(
        routing.user_key(chat.alice),
        {
            "x-event": "ack",
            "x-session-id": str(chat.id),
            "x-seq": 1,
            "x-receipt": command.receipt,
            "x-connection": command.connection,
        },
        json.dumps(stored).encode(),
    )
    first, second = await alice.next_frame(), await alice.next_frame()
    assert (first.command, first.header("destination")) == ("MESSAGE", "/user/queue/ack")
    assert (second.command, second.header("receipt-id")) == ("RECEIPT", "send-1")


async def test_chat_send_is_receipted_after_commit_and_refusals_go_to_the_error_queue(
    world: Any,
) -> None:
    chat = await world.chat()
    world.relay.start()
    edge = await world.edge()
    alice = await world.stomp_py(edge, passcode=chat.alice_token)
    bob = await world.stomp_py(edge, passcode=chat.bob_token)
    alice.conn.subscribe("/user/queue/ack", id="ack")
    bob.conn.subscribe(chat.topic, id="t", headers={"receipt": "sub"})
    assert (await bob.next())[0] == "RECEIPT"
    cid = str(uuid.uuid4())
    body = json.dumps({"sessionId": str(chat.id), "content": "hi bob", "clientMessageId": cid})
    alice.conn.send("/app/chat.send", body, headers={"receipt": "send-1"})
    kinds = {}
    for _ in range(2):
        kind, frame = await alice.next()
        kinds[kind] = frame
    assert kinds["RECEIPT"].headers["receipt-id"] == "send-1"
    ack = kinds["MESSAGE"]
    assert ack.headers["destination"] == "/user/queue/ack"
    stored = json.loads(ack.body)
    assert stored["clientMessageId"] == cid
    [delivered] = await bob.messages(1)
    assert json.loads(delivered.body)["messageId"] == stored["messageId"]
    assert await world.pool.fetchval("SELECT count(*) FROM chat_messages") == 1

    eve = await world.stomp_py(edge, passcode=world.token("eve.sender@example.com"))
    eve.conn.subscribe("/user/queue/error", id="err", headers={"receipt": "sub"})
    assert (await eve.next())[0] == "RECEIPT"
    eve.conn.send("/app/chat.send", body.replace(cid, str(uuid.uuid4())), headers={"receipt": "no"})
    kind, error = await eve.next()
    assert kind == "MESSAGE"
    assert error.headers["destination"] == "/user/queue/error"
    assert error.headers["receipt-id"] == "no"
    assert json.loads(error.body)["code"] == "NOT_PARTICIPANT"
    eve.conn.send("/app/chat.send", "{not json", headers={"receipt": "bad"})
    kind, invalid = await eve.next()
    assert json.loads(invalid.body)["code"] == "INVALID_INPUT"
    assert invalid.headers["receipt-id"] == "bad"
    with pytest.raises(TimeoutError):  # a refused message gets no RECEIPT
        await eve.next(within=0.3)


async def test_typing_read_and_acknowledged_delivery_reach_the_peer(world: Any) -> None:
    chat = await world.chat()
    world.relay.start()
    edge = await world.edge(delivered_flush_seconds=0.05)
    alice = await world.raw(edge, chat.alice_token)
    bob = await world.raw(edge, chat.bob_token)
    await alice.subscribe(chat.topic, ("receipt", "a"))
    await bob.subscribe(chat.topic, ("ack", "client-individual"), ("receipt", "b"))
    assert (await alice.next_frame()).command == "RECEIPT"
    assert (await bob.next_frame()).command == "RECEIPT"
    sent = [await world.rest_send(chat, chat.alice, f"m{i}") for i in range(3)]
    got = [await bob.next_frame() for _ in range(3)]
    assert [f.header("x-seq") for f in got] == ["1", "2", "3"]
    for _ in range(3):
        await alice.next_frame()  # alice's own messages on her topic
    for frame in got:  # ACKs coalesce into one delivered mark, up to seq 3
        await bob.write(Frame("ACK", (("id", frame.header("ack") or ""),)))
    receipt = await next_where(alice, lambda f: f.header("x-event") == "receipt")
    assert json.loads(receipt.body)["kind"] == "delivered"
    assert json.loads(receipt.body)["upToSeq"] == sent[-1]["seq"]
    marks = await world.pool.fetchval(
        "SELECT delivered_seq FROM chat_participants WHERE user_email = $1", chat.bob
    )
    assert marks == 3

    await bob.send("/app/chat.typing", json.dumps({"sessionId": str(chat.id)}).encode())
    typing = await next_where(alice, lambda f: f.header("x-event") == "typing")
    body = json.loads(typing.body)
    assert (body["email"], body["typing"], body["sessionId"]) == (chat.bob, True, str(chat.id))

    read = json.dumps({"sessionId": str(chat.id), "upToSeq": 2}).encode()
    await bob.send("/app/chat.read", read, ("receipt", "read-1"))
    read_receipt = await next_where(
        alice, lambda f: f.header("x-event") == "receipt" and b'"read"' in f.body
    )
    assert json.loads(read_receipt.body)["upToSeq"] == 2
    answered = await next_where(bob, lambda f: f.command == "RECEIPT")
    assert answered.header("receipt-id") == "read-1"


async def test_a_cumulative_ack_moves_the_delivered_mark_through_message_svc(
    world: Any,
) -> None:
    """In ``client`` ack mode one ACK settles its message and every earlier one: the edge
    moves the delivered mark (message-svc ``POST .../delivered``) up to that message's seq."""
    chat = await world.chat()
    world.relay.start()
    edge = await world.edge(delivered_flush_seconds=0.05)
    alice = await world.raw(edge, chat.alice_token)
    bob = await world.raw(edge, chat.bob_token)
    await alice.subscribe(chat.topic, ("receipt", "a"))
    sub = await bob.subscribe(chat.topic, ("ack", "client"), ("receipt", "b"))
    assert (await alice.next_frame()).command == "RECEIPT"
    assert (await bob.next_frame()).command == "RECEIPT"
    for i in range(4):
        await world.rest_send(chat, chat.alice, f"m{i}")
    got = [await bob.next_frame() for _ in range(4)]
    assert [f.header("x-seq") for f in got] == ["1", "2", "3", "4"]
    [session] = [c for c in edge.edge.clients.values() if c.email == chat.bob]
    assert len(session.core.subscriptions[sub].unacked) == 4
    await bob.write(Frame("ACK", (("id", got[2].header("ack") or ""),)))  # settles 1..3
    receipt = await next_where(alice, lambda f: f.header("x-event") == "receipt")
    assert json.loads(receipt.body)["kind"] == "delivered"
    assert json.loads(receipt.body)["upToSeq"] == 3
    assert (
        await world.pool.fetchval(
            "SELECT delivered_seq FROM chat_participants WHERE user_email = $1", chat.bob
        )
        == 3
    )
    pending = set(session.core.subscriptions[sub].unacked.values())  # and the receipt event
    assert f"{chat.id}:4" in pending
    assert not pending & {f"{chat.id}:{seq}" for seq in (1, 2, 3)}


async def test_sends_are_rate_limited_per_connection(world: Any) -> None:
    chat = await world.chat()
    edge = await world.edge(sends_burst=2, sends_per_second=0.01)
    alice = await world.raw(edge, chat.alice_token)
    await alice.subscribe("/user/queue/error")
    typing = json.dumps({"sessionId": str(chat.id)}).encode()
    for _ in range(3):
        await alice.send("/app/chat.typing", typing)
    frame = await alice.next_frame()
    assert frame.header("destination") == "/user/queue/error"
    assert json.loads(frame.body)["code"] == "RATE_LIMITED"


async def test_a_message_published_once_reaches_subscribers_on_two_edges(world: Any) -> None:
    chat = await world.chat()
    world.relay.start()
    one, two = await world.edge(), await world.edge()
    on_one = await world.stomp_py(one, passcode=chat.bob_token)
    on_two = await world.stomp_py(two, passcode=chat.bob_token)
    alice_on_two = await world.stomp_py(two, passcode=chat.alice_token)
    on_one.conn.subscribe(chat.topic, id="t", headers={"receipt": "r"})
    on_two.conn.subscribe("/user/queue/messages", id="m", headers={"receipt": "r"})
    alice_on_two.conn.subscribe("/user/queue/messages", id="m", headers={"receipt": "r"})
    for client in (on_one, on_two, alice_on_two):
        assert (await client.next())[0] == "RECEIPT"
    sent = await world.rest_send(chat, chat.alice, "across edges")
    for client in (on_one, on_two, alice_on_two):
        [frame] = await client.messages(1)
        assert json.loads(frame.body)["messageId"] == sent["messageId"]
    with pytest.raises(TimeoutError):  # one copy each, however many keys matched
        await on_two.messages(1, within=0.3)


async def test_deliveries_are_acknowledged_in_batches_and_none_is_left_waiting(
    world: Any,
) -> None:
    """A prefetch of 10 lets RabbitMQ hand out 10 unacknowledged deliveries at a time: 60
    messages all arrive only if every batch got its ack (the last one by the timer, with
    nothing after it), and the acks are fewer than the deliveries."""
    chat = await world.chat()
    edge = await world.edge(amqp_prefetch=10)
    bob = await world.stomp_py(edge, passcode=chat.bob_token)
    bob.conn.subscribe(chat.topic, id="t", headers={"receipt": "r"})
    assert (await bob.next())[0] == "RECEIPT"
    for seq in range(1, 61):
        body = {"messageId": str(uuid.uuid4()), "sessionId": str(chat.id), "seq": seq}
        await world.publish(
            routing.session_key(chat.id),
            {"x-event": "message", "x-session-id": str(chat.id), "x-seq": seq},
            json.dumps(body).encode(),
        )
    frames = await bob.messages(60)
    assert [json.loads(f.body)["seq"] for f in frames] == list(range(1, 61))
    acks = edge.edge.broker.acks.sent
    assert 0 < acks < 60


async def test_only_typing_events_pass_through_the_typing_exchange(world: Any) -> None:
    """The edges may publish to chat.typing (bound into chat.events), so anything published
    there that is not a typing event (a message, a receipt) is dropped, not fanned out."""
    chat = await world.chat()
    edge = await world.edge()
    alice = await world.raw(edge, chat.alice_token)
    await alice.subscribe(chat.topic, ("receipt", "a"))
    assert (await alice.next_frame()).command == "RECEIPT"
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    try:
        channel = await connection.channel()
        typing = await channel.declare_exchange(routing.TYPING_EXCHANGE, passive=True)
        key = routing.session_key(chat.id)
        forged: aio_pika.abc.HeadersType = {
            routing.EVENT_HEADER: "message",
            routing.SESSION_HEADER: str(chat.id),
            routing.SEQ_HEADER: 1,
        }
        events: list[tuple[aio_pika.abc.HeadersType, bytes]] = [
            (forged, b'{"content": "forged"}'),
            ({**forged, routing.EVENT_HEADER: "receipt"}, b'{"kind": "read", "upToSeq": 9}'),
            ({routing.EVENT_HEADER: "typing", routing.SESSION_HEADER: str(chat.id)}, b"{}"),
        ]
        for headers, body in events:
            await typing.publish(aio_pika.Message(body, headers=headers), key)
    finally:
        await connection.close()
    frame = await alice.next_frame()
    assert frame.header("x-event") == "typing"  # the two forged events never came
    assert edge.broker.forged == 2
