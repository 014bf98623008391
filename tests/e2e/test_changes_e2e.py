"""Edits and deletes through the gateway of the whole stack: REST and STOMP, live delivery on
the session topic and the user queues, replay on resume, history, refusals, idempotency."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from chat_stomp.frames import Frame

from chat_testing.stomp import StompClient

from .conftest import E2E_DATABASE_URL, Chat, Stack, open_chat, subscribed

pytestmark = pytest.mark.e2e


@pytest.fixture
def chat(stack: Stack) -> Chat:
    return open_chat(stack, "changes")


@pytest.fixture
async def opened() -> AsyncIterator[list[StompClient]]:
    clients: list[StompClient] = []
    yield clients
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def ws(stack: Stack, token: str) -> str:
    return stack.gateway.replace("http://", "ws://") + f"/ws?access_token={token}"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def rest_send(stack: Stack, chat: Chat, content: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
        answer = await client.post(
            "/api/chat/message",
            json={"sessionId": chat.id, "content": content, "clientMessageId": str(uuid.uuid4())},
            headers=auth(chat.alice_token),
        )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def rest_edit(
    stack: Stack, chat: Chat, message_id: str, content: str, token: str, cid: str | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
        return await client.patch(
            f"/api/chat/{chat.id}/messages/{message_id}",
            json={"content": content, "clientMessageId": cid or str(uuid.uuid4())},
            headers=auth(token),
        )


async def rest_delete(
    stack: Stack, chat: Chat, message_id: str, token: str, cid: str | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
        return await client.request(
            "DELETE",
            f"/api/chat/{chat.id}/messages/{message_id}",
            json={"clientMessageId": cid or str(uuid.uuid4())},
            headers=auth(token),
        )


async def messages(client: StompClient, count: int, within: float = 10.0) -> list[Frame]:
    got: list[Frame] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            frame = await client.next_frame(within)
            assert frame.command != "ERROR", frame.headers
            if frame.command == "MESSAGE":
                got.append(frame)
    return got


def seen(frame: Frame) -> tuple[str | None, str | None]:
    return frame.header("x-event"), frame.header("x-seq")


def problem(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == code, answer.text


async def test_rest_changes_reach_the_topic_and_both_users_queues_in_seq_order(
    stack: Stack, chat: Chat, opened: list[StompClient]
) -> None:
    topic = await StompClient.open(ws(stack, chat.bob_token))
    bob = await StompClient.open(ws(stack, chat.bob_token))
    alice = await StompClient.open(ws(stack, chat.alice_token))
    opened += [topic, bob, alice]
    await subscribed(topic, f"/topic/session.{chat.id}")
    await subscribed(bob, "/user/queue/messages")
    await subscribed(alice, "/user/queue/messages")
    sent = await rest_send(stack, chat, "meet at 7")
    edited = await rest_edit(stack, chat, sent["messageId"], "meet at 8", chat.alice_token)
    assert edited.status_code == 200, edited.text
    deleted = await rest_delete(stack, chat, sent["messageId"], chat.alice_token)
    assert deleted.status_code == 200, deleted.text
    seq = sent["seq"]
    assert (edited.json()["seq"], deleted.json()["seq"]) == (seq + 1, seq + 2)
    for client, destination in (
        (topic, f"/topic/session.{chat.id}"),
        (bob, "/user/queue/messages"),
        (alice, "/user/queue/messages"),
    ):
        got = await messages(client, 3)
        assert [seen(f) for f in got] == [
            ("message", str(seq)),
            ("edit", str(seq + 1)),
            ("delete", str(seq + 2)),
        ]
        assert {f.header("destination") for f in got} == {destination}
        assert [f.header("message-id") for f in got] == [
            f"{chat.id}:{s}" for s in (seq, seq + 1, seq + 2)
        ]
        edit, delete = json.loads(got[1].body), json.loads(got[2].body)
        assert edit == edited.json()
        assert (edit["messageId"], edit["content"], edit["messageSeq"]) == (
            sent["messageId"],
            "meet at 8",
            seq,
        )
        assert delete == deleted.json()
        assert (delete["change"], delete["messageId"], delete["content"]) == (
            "delete",
            sent["messageId"],
            "",
        )
    # history: the tombstone at the message's seq, no text; the changes are not messages
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as http:
        page = (await http.get(f"/api/chat/{chat.id}/history", headers=auth(chat.bob_token))).json()
        unread = (
            await http.get(f"/api/chat/{chat.id}/unread", headers=auth(chat.bob_token))
        ).json()
    [tombstone] = page["messages"]
    assert tombstone["seq"] == seq
    assert (tombstone["deleted"], tombstone["content"]) == (True, "")
    assert tombstone["editedAt"] is not None
    assert tombstone["deletedAt"] is not None
    assert unread["count"] == 0
    # gone from storage, not hidden
    conn = await asyncpg.connect(E2E_DATABASE_URL)
    try:
        stored = await conn.fetchval(
            "SELECT content FROM chat_messages WHERE id = $1", uuid.UUID(sent["messageId"])
        )
        edits = await conn.fetch(
            "SELECT content FROM chat_message_changes WHERE message_id = $1",
            uuid.UUID(sent["messageId"]),
        )
    finally:
        await conn.close()
    assert stored is None
    assert [r["content"] for r in edits] == [None, None]


async def test_a_resumed_subscription_replays_the_changes_with_their_kind(
    stack: Stack, chat: Chat, opened: list[StompClient]
) -> None:
    first = await rest_send(stack, chat, "one")
    second = await rest_send(stack, chat, "two")
    edited = await rest_edit(stack, chat, first["messageId"], "one, edited", chat.alice_token)
    deleted = await rest_delete(stack, chat, second["messageId"], chat.alice_token)
    assert (edited.status_code, deleted.status_code) == (200, 200)
    base = first["seq"] - 1
    client = await StompClient.open(ws(stack, chat.bob_token))
    opened.append(client)
    await client.subscribe(f"/topic/session.{chat.id}", ("x-resume-after-seq", str(base)))
    got = await messages(client, 4)
    assert [seen(f) for f in got] == [
        ("message", str(base + 1)),
        ("message", str(base + 2)),
        ("edit", str(base + 3)),
        ("delete", str(base + 4)),
    ]
    # messages in their current state; the changes as they were delivered live
    assert json.loads(got[0].body)["content"] == "one, edited"
    assert json.loads(got[0].body)["editedAt"] is not None
    assert json.loads(got[1].body)["deleted"] is True
    assert json.loads(got[2].body) == edited.json()
    assert json.loads(got[3].body) == deleted.json()
    # live events go on after the replay, without a gap or a duplicate
    later = await rest_send(stack, chat, "three")
    [live] = await messages(client, 1)
    assert seen(live) == ("message", str(later["seq"]))
    assert later["seq"] == base + 5
    # a resume from just before the changes replays the changes only
    again = await StompClient.open(ws(stack, chat.bob_token))
    opened.append(again)
    await again.subscribe(f"/topic/session.{chat.id}", ("x-resume-after-seq", str(base + 2)))
    got = await messages(again, 3)
    assert [seen(f) for f in got] == [
        ("edit", str(base + 3)),
        ("delete", str(base + 4)),
        ("message", str(base + 5)),
    ]


async def test_stomp_edit_and_delete_are_answered_and_delivered(
    stack: Stack, chat: Chat, opened: list[StompClient]
) -> None:
    alice = await StompClient.open(ws(stack, chat.alice_token))
    bob = await StompClient.open(ws(stack, chat.bob_token))
    opened += [alice, bob]
    await subscribed(alice, "/user/queue/ack")
    await subscribed(alice, "/user/queue/error")
    await subscribed(bob, f"/topic/session.{chat.id}")
    sent = await rest_send(stack, chat, "over STOMP soon")
    [message] = await messages(bob, 1)
    assert seen(message) == ("message", str(sent["seq"]))
    cid = str(uuid.uuid4())
    body = {
        "sessionId": chat.id,
        "messageId": sent["messageId"],
        "content": "edited over STOMP",
        "clientMessageId": cid,
    }
    await alice.send("/app/chat.edit", json.dumps(body).encode(), ("receipt", "r-edit"))
    ack = await alice.next_frame()
    assert (ack.command, ack.header("destination"), ack.header("x-event")) == (
        "MESSAGE",
        "/user/queue/ack",
        "ack",
    )
    change = json.loads(ack.body)
    assert (change["change"], change["seq"], change["content"]) == (
        "edit",
        sent["seq"] + 1,
        "edited over STOMP",
    )
    assert ack.header("x-seq") == str(sent["seq"] + 1)
    receipt = await alice.next_frame()
    assert (receipt.command, receipt.header("receipt-id")) == ("RECEIPT", "r-edit")
    [edit] = await messages(bob, 1)
    assert seen(edit) == ("edit", str(sent["seq"] + 1))
    assert json.loads(edit.body) == change
    # the same SEND again: the same change, nothing new delivered
    await alice.send("/app/chat.edit", json.dumps(body).encode(), ("receipt", "r-again"))
    again = await alice.next_frame()
    assert json.loads(again.body) == change
    assert (await alice.next_frame()).header("receipt-id") == "r-again"
    # Bob may not delete Alice's message: refused on the error queue, no RECEIPT
    await subscribed(bob, "/user/queue/error")
    removal = {"sessionId": chat.id, "messageId": sent["messageId"]}
    refused_cid = str(uuid.uuid4())
    await bob.send(
        "/app/chat.delete",
        json.dumps({**removal, "clientMessageId": refused_cid}).encode(),
        ("receipt", "r-bob"),
    )
    error = await bob.next_frame()
    assert (error.command, error.header("destination")) == ("MESSAGE", "/user/queue/error")
    assert error.header("receipt-id") == "r-bob"
    assert json.loads(error.body)["code"] == "NOT_MESSAGE_SENDER"
    assert json.loads(error.body)["clientMessageId"] == refused_cid
    # Alice may
    await alice.send(
        "/app/chat.delete",
        json.dumps({**removal, "clientMessageId": str(uuid.uuid4())}).encode(),
        ("receipt", "r-delete"),
    )
    ack = await alice.next_frame()
    assert json.loads(ack.body)["change"] == "delete"
    assert (await alice.next_frame()).header("receipt-id") == "r-delete"
    [delete] = await messages(bob, 1)  # the next topic event: the delete, no duplicate edit
    assert seen(delete) == ("delete", str(sent["seq"] + 2))
    # editing the deleted message: refused
    await alice.send(
        "/app/chat.edit",
        json.dumps({**body, "clientMessageId": str(uuid.uuid4())}).encode(),
        ("receipt", "r-late"),
    )
    error = await alice.next_frame()
    assert error.header("destination") == "/user/queue/error"
    assert json.loads(error.body)["code"] == "MESSAGE_DELETED"


async def test_rest_refusals_and_idempotency(stack: Stack, chat: Chat) -> None:
    sent = await rest_send(stack, chat, "mine")
    mid = sent["messageId"]
    # only the sender; strangers are not participants; unknown messages are not found
    problem(await rest_edit(stack, chat, mid, "x", chat.bob_token), 403, "NOT_MESSAGE_SENDER")
    problem(await rest_delete(stack, chat, mid, chat.bob_token), 403, "NOT_MESSAGE_SENDER")
    eve = stack.token(f"eve.changes.{uuid.uuid4().hex[:6]}@example.com")
    problem(await rest_edit(stack, chat, mid, "x", eve), 403, "NOT_PARTICIPANT")
    problem(await rest_delete(stack, chat, mid, eve), 403, "NOT_PARTICIPANT")
    unknown = str(uuid.uuid4())
    problem(await rest_edit(stack, chat, unknown, "x", chat.alice_token), 404, "MESSAGE_NOT_FOUND")
    problem(await rest_edit(stack, chat, mid, " ", chat.alice_token), 422, "CONTENT_BLANK")
    problem(
        await rest_edit(stack, chat, mid, "x" * 5000, chat.alice_token), 413, "CONTENT_TOO_LARGE"
    )
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
        anonymous = await client.patch(
            f"/api/chat/{chat.id}/messages/{mid}",
            json={"content": "x", "clientMessageId": str(uuid.uuid4())},
        )
    assert anonymous.status_code == 401
    # idempotent per clientMessageId
    cid = str(uuid.uuid4())
    first = await rest_edit(stack, chat, mid, "once", chat.alice_token, cid)
    again = await rest_edit(stack, chat, mid, "once", chat.alice_token, cid)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    problem(
        await rest_delete(stack, chat, mid, chat.alice_token, cid), 409, "CLIENT_MESSAGE_ID_REUSED"
    )
    # past the edit window (the stack's EDIT_WINDOW_SECONDS, 900 s by default)
    conn = await asyncpg.connect(E2E_DATABASE_URL)
    try:
        await conn.execute(
            "UPDATE chat_messages SET sent_at = now() - interval '1 hour' WHERE id = $1",
            uuid.UUID(mid),
        )
        last = await conn.fetchval(
            "SELECT last_seq FROM chat_sessions WHERE id = $1", uuid.UUID(chat.id)
        )
    finally:
        await conn.close()
    problem(await rest_edit(stack, chat, mid, "late", chat.alice_token), 409, "EDIT_WINDOW_CLOSED")
    # a retry of an edit made in time is still answered
    late_retry = await rest_edit(stack, chat, mid, "once", chat.alice_token, cid)
    assert late_retry.status_code == 200
    assert late_retry.json() == first.json()
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
        events = await client.get(
            f"/api/chat/{chat.id}/events", params={"after": 0}, headers=auth(chat.bob_token)
        )
    assert events.status_code == 200
    assert [e["event"] for e in events.json()["events"]] == ["message", "edit"]
    assert events.json()["events"][-1]["seq"] == last  # nothing written by the refusals
    # deleting has no window
    gone = await rest_delete(stack, chat, mid, chat.alice_token)
    assert gone.status_code == 200
    assert gone.json()["seq"] == last + 1
    problem(await rest_delete(stack, chat, mid, chat.alice_token), 409, "MESSAGE_DELETED")
