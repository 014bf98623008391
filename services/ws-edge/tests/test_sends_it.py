"""/app/chat.send straight to message-svc (SEND_ROUTE=direct), through a real edge and the
real message-svc: pipelined SENDs each answered by their own RECEIPT or error, in the order
sent; and when message-svc cannot be reached, the send queue takes the SEND and message-svc's
consumer answers it."""

from __future__ import annotations

import json
import uuid
from typing import Any

from chat_common.dto import BULK_MAX

from .conftest import WITHIN, free_port


def send_body(session: uuid.UUID, content: str, cid: str | None = None) -> bytes:
    body = {"sessionId": str(session), "content": content, "clientMessageId": cid}
    body["clientMessageId"] = cid or str(uuid.uuid4())
    return json.dumps(body).encode()


async def test_pipelined_sends_are_stored_in_order_each_with_its_own_answer(world: Any) -> None:
    chat = await world.chat()
    other = await world.chat()  # Alice is no participant of this one
    # nobody consumes this send queue: only message-svc's own answers can answer the SENDs
    edge = await world.edge(
        send_queue=f"{world.send_queue}.unused", sends_burst=1_000, sends_per_second=1_000.0
    )
    alice = await world.raw(edge, chat.alice_token)
    await alice.subscribe("/user/queue/ack")
    await alice.subscribe("/user/queue/error")
    await alice.subscribe("/user/queue/ack", ("receipt", "subscribed"))
    while (await alice.next_frame()).command != "RECEIPT":
        pass
    count = BULK_MAX + 30  # more than one bulk request's worth
    refused = {7, 64}
    replayed_cid = str(uuid.uuid4())
    for i in range(count):  # written without waiting for any answer
        session = other.id if i in refused else chat.id
        cid = replayed_cid if i in (3, 90) else None  # the second is a retry of the first
        await alice.send("/app/chat.send", send_body(session, f"m{i}", cid), ("receipt", f"r{i}"))
    receipts: list[str] = []
    acks: list[dict[str, Any]] = []
    errors: dict[str, dict[str, Any]] = {}
    while len(receipts) + len(errors) < count:
        frame = await alice.next_frame(within=WITHIN)
        if frame.command == "RECEIPT":
            receipts.append(frame.header("receipt-id") or "")
        elif frame.header("destination") == "/user/queue/error":
            errors[frame.header("receipt-id") or ""] = json.loads(frame.body)
        elif frame.header("destination") == "/user/queue/ack":
            acks.append(json.loads(frame.body))
    expected = [f"r{i}" for i in range(count) if i not in refused]
    assert receipts == expected  # every stored SEND answered, in the order sent
    assert set(errors) == {f"r{i}" for i in refused}
    assert {e["code"] for e in errors.values()} == {"NOT_PARTICIPANT"}
    assert errors["r7"]["clientMessageId"] is not None
    # two ack subscriptions: each stored message on both, in the order sent
    contents = [a["content"] for a in acks]
    assert contents[::2] == contents[1::2]
    assert contents[::2] == [f"m{i}" if i != 90 else "m3" for i in range(count) if i not in refused]
    rows = await world.pool.fetch(
        "SELECT seq, content FROM chat_messages WHERE session_id = $1 ORDER BY seq", chat.id
    )
    stored = [f"m{i}" for i in range(count) if i not in refused and i != 90]
    assert [r["content"] for r in rows] == stored  # in order, the retry stored once
    assert [r["seq"] for r in rows] == list(range(1, len(stored) + 1))


async def test_when_message_svc_cannot_be_reached_the_send_queue_takes_the_send(
    world: Any,
) -> None:
    chat = await world.chat()
    # nothing listens there; the world's message-svc consumes the edge's send queue
    edge = await world.edge(message_svc_url=f"http://127.0.0.1:{free_port()}")
    alice = await world.raw(edge, chat.alice_token)
    await alice.subscribe("/user/queue/ack")
    cid = str(uuid.uuid4())
    await alice.send("/app/chat.send", send_body(chat.id, "by the queue", cid), ("receipt", "q"))
    ack = await alice.next_frame()
    receipt = await alice.next_frame()
    assert (ack.command, ack.header("destination")) == ("MESSAGE", "/user/queue/ack")
    assert json.loads(ack.body)["clientMessageId"] == cid
    assert (receipt.command, receipt.header("receipt-id")) == ("RECEIPT", "q")
    row = await world.pool.fetchrow(
        "SELECT content FROM chat_messages WHERE client_msg_id = $1", uuid.UUID(cid)
    )
    assert row is not None
    assert row["content"] == "by the queue"
