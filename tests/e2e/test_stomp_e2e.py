"""STOMP over WebSocket through the gateway of the whole stack (`make up`)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from chat_stomp.frames import Frame

from chat_testing.stomp import StompClient

from .conftest import Chat, Stack, open_chat, subscribed

pytestmark = pytest.mark.e2e


@pytest.fixture
def chat(stack: Stack) -> Chat:
    return open_chat(stack, "stomp")


def ws(stack: Stack, token: str | None = None) -> str:
    url = stack.gateway.replace("http://", "ws://") + "/ws"
    return f"{url}?access_token={token}" if token else url


async def rest_send(
    stack: Stack, chat: Chat, content: str, token: str | None = None
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
        answer = await client.post(
            "/api/chat/message",
            json={"sessionId": chat.id, "content": content, "clientMessageId": str(uuid.uuid4())},
            headers={"Authorization": f"Bearer {token or chat.alice_token}"},
        )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def frames_until(
    client: StompClient, count: int, within: float = 10.0, command: str = "MESSAGE"
) -> list[Frame]:
    got: list[Frame] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            frame = await client.next_frame(within)
            if frame.command == command:
                got.append(frame)
    return got


@pytest.fixture
async def opened() -> AsyncIterator[list[StompClient]]:
    clients: list[StompClient] = []
    yield clients
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def test_every_token_source_connects(
    stack: Stack, chat: Chat, opened: list[StompClient]
) -> None:
    for client in (
        await StompClient.open(ws(stack, chat.alice_token)),
        await StompClient.open(
            ws(stack), handshake_headers={"Authorization": f"Bearer {chat.alice_token}"}
        ),
        await StompClient.open(
            ws(stack), headers=(("Authorization", f"Bearer {chat.alice_token}"),)
        ),
        await StompClient.open(
            ws(stack), headers=(("login", chat.alice), ("passcode", chat.alice_token))
        ),
    ):
        opened.append(client)


@pytest.mark.parametrize("token", ["garbage", None])
async def test_bad_or_missing_token_is_an_error_frame(stack: Stack, token: str | None) -> None:
    with pytest.raises(ConnectionError, match=r"token|authenticat|malformed"):
        await StompClient.open(ws(stack), headers=(("passcode", token),) if token else ())


async def test_expired_token_is_refused(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{stack.flairbit}/dev/token", json={"email": "late@example.com", "ttlSeconds": -3600}
        )
    expired = answer.json()["token"]
    with pytest.raises(ConnectionError, match="expired"):
        await StompClient.open(ws(stack), headers=(("passcode", expired),))


async def test_rest_message_reaches_topic_and_both_devices(
    stack: Stack, chat: Chat, opened: list[StompClient]
) -> None:
    topic = await StompClient.open(ws(stack, chat.bob_token))
    phone = await StompClient.open(ws(stack, chat.bob_token))
    laptop = await StompClient.open(ws(stack, chat.bob_token))
    opened += [topic, phone, laptop]
    await subscribed(topic, f"/topic/session.{chat.id}")
    await subscribed(phone, "/user/queue/messages")
    await subscribed(laptop, "/user/queue/messages")
    sent = await rest_send(stack, chat, "hello over REST")
    for client, destination in (
        (topic, f"/topic/session.{chat.id}"),
        (phone, "/user/queue/messages"),
        (laptop, "/user/queue/messages"),
    ):
        [frame] = await frames_until(client, 1)
        assert frame.header("destination") == destination
        assert frame.header("x-event") == "message"
        assert frame.header("x-session-id") == chat.id
        assert frame.header("x-seq") == str(sent["seq"])
        assert frame.header("content-type") == "application/json"
        assert json.loads(frame.body)["messageId"] == sent["messageId"]


async def test_chat_send_is_receipted_after_commit_and_delivered(
    stack: Stack, chat: Chat, opened: list[StompClient]
) -> None:
    alice = await StompClient.open(ws(stack, chat.alice_token))
    bob = await StompClient.open(ws(stack, chat.bob_token))
    opened += [alice, bob]
    await subscribed(alice, "/user/queue/ack")
    await subscribed(bob, f"/topic/session.{chat.id}")
    cid = str(uuid.uuid4())
    body = json.dumps({"sessionId": chat.id, "content": "over STOMP", "clientMessageId": cid})
    await alice.send("/app/chat.send", body.encode(), ("receipt", "send-1"))
    first, second = await alice.next_frame(), await alice.next_frame()
    by_command = {first.command: first, second.command: second}
    assert by_command["RECEIPT"].header("receipt-id") == "send-1"
    ack = by_command["MESSAGE"]
    assert ack.header("destination") == "/user/queue/ack"
    stored = json.loads(ack.body)
    assert stored["clientMessageId"] == cid
    [delivered] = await frames_until(bob, 1)
    assert json.loads(delivered.body)["messageId"] == stored["messageId"]
    async with httpx.AsyncClient(base_url=stack.gateway) as client:
        history = await client.get(
            f"/api/chat/{chat.id}/history", headers={"Authorization": f"Bearer {chat.bob_token}"}
        )
    assert [m["clientMessageId"] for m in history.json()["messages"]] == [cid]


async def test_refused_send_goes_to_the_error_queue(
    stack: Stack, chat: Chat, opened: list[StompClient]
) -> None:
    eve_token = stack.token("eve.stomp@example.com")
    eve = await StompClient.open(ws(stack, eve_token))
    opened.append(eve)
    await subscribed(eve, "/user/queue/error")
    cid = str(uuid.uuid4())
    body = json.dumps({"sessionId": chat.id, "content": "let me in", "clientMessageId": cid})
    await eve.send("/app/chat.send", body.encode(), ("receipt", "nope"))
    [error] = await frames_until(eve, 1)
    assert error.header("destination") == "/user/queue/error"
    assert error.header("receipt-id") == "nope"
    assert json.loads(error.body)["code"] == "NOT_PARTICIPANT"
    assert json.loads(error.body)["clientMessageId"] == cid
    await eve.send("/app/chat.send", b"{not json", ("receipt", "bad"))
    [invalid] = await frames_until(eve, 1)
    assert json.loads(invalid.body)["code"] == "INVALID_INPUT"


async def test_typing_and_read_receipts_reach_the_peer(
    stack: Stack, chat: Chat, opened: list[StompClient]
) -> None:
    alice = await StompClient.open(ws(stack, chat.alice_token))
    bob = await StompClient.open(ws(stack, chat.bob_token))
    opened += [alice, bob]
    await subscribed(alice, f"/topic/session.{chat.id}")
    await subscribed(bob, f"/topic/session.{chat.id}")
    sent = await rest_send(stack, chat, "are you there?")
    await frames_until(bob, 1)
    await frames_until(alice, 1)
    await bob.send("/app/chat.typing", json.dumps({"sessionId": chat.id, "typing": True}).encode())
    typing = await frames_until(alice, 1)
    assert typing[0].header("x-event") == "typing"
    assert json.loads(typing[0].body) | {"profileId": None} == {
        "sessionId": chat.id,
        "email": chat.bob,
        "profileId": None,
        "typing": True,
    }
    await bob.send(
        "/app/chat.read",
        json.dumps({"sessionId": chat.id, "upToSeq": sent["seq"]}).encode(),
        ("receipt", "read-1"),
    )
    receipt_frame = await frames_until(alice, 1)
    assert receipt_frame[0].header("x-event") == "receipt"
    receipt = json.loads(receipt_frame[0].body)
    assert (receipt["kind"], receipt["upToSeq"], receipt["email"]) == (
        "read",
        sent["seq"],
        chat.bob,
    )
    assert (await frames_until(bob, 1, command="RECEIPT"))[0].header("receipt-id") == "read-1"


async def test_a_non_participant_cannot_subscribe(
    stack: Stack, chat: Chat, opened: list[StompClient]
) -> None:
    eve = await StompClient.open(ws(stack, stack.token("eve.sub@example.com")))
    opened.append(eve)
    await eve.subscribe(f"/topic/session.{chat.id}", ("receipt", "r"))
    frame = await eve.next_frame()
    assert frame.command == "ERROR"
    assert "participant" in (frame.header("message") or "")
    unknown = await StompClient.open(ws(stack, chat.alice_token))
    opened.append(unknown)
    await unknown.subscribe("/topic/somebody.else")
    assert (await unknown.next_frame()).command == "ERROR"


async def test_resume_after_a_disconnect_misses_nothing(
    stack: Stack, chat: Chat, opened: list[StompClient]
) -> None:
    bob = await StompClient.open(ws(stack, chat.bob_token))
    await subscribed(bob, f"/topic/session.{chat.id}")
    await rest_send(stack, chat, "m1")
    [first] = await frames_until(bob, 1)
    last_seen = int(first.header("x-seq") or 0)
    await bob.close()  # bob goes away; alice goes on
    for i in range(2, 12):
        await rest_send(stack, chat, f"m{i}")
    again = await StompClient.open(ws(stack, chat.bob_token))
    opened.append(again)
    await again.subscribe(f"/topic/session.{chat.id}", ("x-resume-after-seq", str(last_seen)))

    async def keep_sending() -> None:  # live messages arrive while the replay runs
        for i in range(12, 20):
            await rest_send(stack, chat, f"m{i}")

    sender = asyncio.create_task(keep_sending())
    frames = await frames_until(again, 18, within=20)
    await sender
    seqs = [int(f.header("x-seq") or 0) for f in frames]
    assert seqs == list(range(2, 20))  # every seq after the last seen, once, in order
    assert [json.loads(f.body)["content"] for f in frames] == [f"m{i}" for i in range(2, 20)]
