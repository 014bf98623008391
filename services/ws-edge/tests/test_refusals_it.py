"""Refusals answer the receipt they were asked for, with the real RabbitMQ, session-svc and
message-svc: a refused SEND on a connection with no ``/user/queue/error`` subscription gets
an ERROR with ``receipt-id`` (then the close) instead of silence; every refused frame that
asked for a receipt gets ``receipt-id`` on its ERROR; a resume point that is not a plain
number is refused as such."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from chat_stomp.frames import Frame
from websockets.exceptions import ConnectionClosed

from chat_testing.stomp import StompClient
from ws_edge.disconnect import Disconnect


async def closed_after(client: StompClient) -> int:
    """The close code the edge sends once it has said what it had to say."""
    with pytest.raises(ConnectionClosed) as closed:
        await client.next_frame(within=5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def send_body(chat: Any) -> bytes:
    body = {"sessionId": str(chat.id), "content": "hi", "clientMessageId": str(uuid.uuid4())}
    return json.dumps(body).encode()


async def test_a_send_message_svc_refuses_is_answered_by_an_error_without_an_error_queue(
    world: Any,
) -> None:
    chat = await world.chat()
    edge = await world.edge()
    eve = await world.raw(edge, world.token("eve.receipt@example.com"))
    await eve.send("/app/chat.send", send_body(chat), ("receipt", "send-1"))
    frame = await eve.next_frame()
    assert frame.command == "ERROR"
    assert frame.header("receipt-id") == "send-1"
    assert "not a participant" in (frame.header("message") or "")
    assert json.loads(frame.body)["code"] == "NOT_PARTICIPANT"  # as /user/queue/error has it
    assert frame.header("content-type") == "application/json"
    assert await closed_after(eve) == Disconnect.REFUSED.code


async def test_with_an_error_queue_the_refusal_stays_a_message_and_the_connection_open(
    world: Any,
) -> None:
    chat = await world.chat()
    edge = await world.edge()
    eve = await world.raw(edge, world.token("eve.queue@example.com"))
    await eve.subscribe("/user/queue/error", ("receipt", "sub"))
    assert (await eve.next_frame()).command == "RECEIPT"
    await eve.send("/app/chat.send", send_body(chat), ("receipt", "send-1"))
    frame = await eve.next_frame()
    assert (frame.command, frame.header("destination")) == ("MESSAGE", "/user/queue/error")
    assert frame.header("receipt-id") == "send-1"
    await eve.subscribe("/user/queue/ack", ("receipt", "still-open"))
    assert (await eve.next_frame()).header("receipt-id") == "still-open"


async def test_a_send_the_edge_refuses_is_answered_by_an_error_without_an_error_queue(
    world: Any,
) -> None:
    chat = await world.chat()
    edge = await world.edge()
    alice = await world.raw(edge, chat.alice_token)
    await alice.send("/app/chat.send", b"{not json")  # no receipt asked: dropped
    await alice.subscribe("/user/queue/ack", ("receipt", "open"))
    assert (await alice.next_frame()).header("receipt-id") == "open"
    await alice.send("/app/chat.send", b"{not json", ("receipt", "bad-1"))
    frame = await alice.next_frame()
    assert frame.command == "ERROR"
    assert frame.header("receipt-id") == "bad-1"
    assert json.loads(frame.body)["code"] == "INVALID_INPUT"
    assert frame.header("content-type") == "application/json"
    assert await closed_after(alice) == Disconnect.REFUSED.code


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (Frame("SEND", (("destination", "/app/nowhere"), ("receipt", "r-1"))), "unknown"),
        (
            Frame("SUBSCRIBE", (("id", "s"), ("destination", "/queue/x"), ("receipt", "r-1"))),
            "unknown",
        ),
    ],
)
async def test_a_refused_frame_that_asked_for_a_receipt_gets_it_on_the_error(
    world: Any, frame: Frame, message: str
) -> None:
    edge = await world.edge()
    client = await world.raw(edge, world.token("refused.receipt@example.com"))
    await client.write(frame)
    error = await client.next_frame()
    assert error.command == "ERROR"
    assert error.header("receipt-id") == "r-1"
    assert message in (error.header("message") or "")
    assert await closed_after(client) == Disconnect.REFUSED.code


@pytest.mark.parametrize("resume", ["²", "١٢", "-1", "1e3", "9" * 30])
async def test_a_resume_point_that_is_not_a_plain_number_is_refused_as_such(
    world: Any, resume: str
) -> None:
    chat = await world.chat()
    edge = await world.edge()
    bob = await world.raw(edge, chat.bob_token)
    await bob.subscribe(chat.topic, ("x-resume-after-seq", resume), ("receipt", "r-2"))
    frame = await bob.next_frame()
    assert frame.command == "ERROR"
    assert frame.header("message") == "x-resume-after-seq must be a non-negative integer"
    assert frame.header("receipt-id") == "r-2"
