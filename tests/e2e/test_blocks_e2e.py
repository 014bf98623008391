"""Blocking through the gateway of the whole stack (REST and STOMP): a participant blocks the
other; both sides' sends (REST and STOMP), edits, typing and topic subscriptions are refused,
the live topic subscriptions end with a `block` frame, presence stops flowing between them;
only the blocker unblocks, and an unblock restores it all. Strangers cannot block. The STOMP
matrix of a blocked session covers every destination of the edge."""

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
from ws_edge import destinations

from .conftest import Chat, Stack, open_chat, subscribed

pytestmark = pytest.mark.e2e

GRACE_AND_SWEEP = 3.0 + 1.0  # the stack's PRESENCE_GRACE_SECONDS and PRESENCE_SWEEP_SECONDS


@pytest.fixture
async def opened() -> AsyncIterator[list[StompClient]]:
    clients: list[StompClient] = []
    yield clients
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def ws(stack: Stack) -> str:
    return stack.gateway.replace("http://", "ws://") + "/ws"


async def connect(stack: Stack, token: str, opened: list[StompClient]) -> StompClient:
    client = await StompClient.open(ws(stack), headers=(("passcode", token),))
    opened.append(client)
    return client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rest(stack: Stack, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, f"{stack.gateway}{path}", headers=auth(token), timeout=10, **kwargs
    )


def rest_send(stack: Stack, chat: Chat, token: str, content: str = "hi") -> httpx.Response:
    body = {"sessionId": chat.id, "content": content, "clientMessageId": str(uuid.uuid4())}
    return rest(stack, "POST", "/api/chat/message", token, json=body)


def problem(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == code, answer.text


def body(frame: Frame) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(frame.body)
    return parsed


async def subscribe(client: StompClient, destination: str) -> str:
    """SUBSCRIBE and wait for its RECEIPT (authorised and bound); the subscription's id."""
    receipt = f"r-{uuid.uuid4().hex[:8]}"
    sub_id = await client.subscribe(destination, ("receipt", receipt))
    frame = await client.next_frame()
    assert (frame.command, frame.header("receipt-id")) == ("RECEIPT", receipt), frame
    return sub_id


async def frames(client: StompClient, count: int) -> list[Frame]:
    return [await client.next_frame() for _ in range(count)]


async def nothing_within(client: StompClient, seconds: float) -> None:
    try:
        frame = await client.next_frame(seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected {frame.command} {frame.headers} {frame.body!r}")


async def error_code(client: StompClient, receipt: str) -> str:
    frame = await client.next_frame()
    assert (frame.command, frame.header("destination")) == ("MESSAGE", "/user/queue/error"), frame
    assert frame.header("receipt-id") == receipt
    return str(body(frame)["code"])


def peers_of(stack: Stack, token: str) -> list[str]:
    """session-svc's answer to the edges: whom a user's presence is told to."""
    answer = httpx.get(f"{stack.session_svc}/internal/peers", headers=auth(token), timeout=10)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["emails"])


def presence(stack: Stack, token: str, email: str) -> httpx.Response:
    return rest(stack, "GET", "/api/chat/presence", token, params={"emails": email})


async def test_block_stops_everything_between_the_two_and_unblock_restores_it(
    stack: Stack, opened: list[StompClient]
) -> None:
    chat = open_chat(stack, "block")
    topic = f"/topic/session.{chat.id}"
    first = rest_send(stack, chat, chat.alice_token, "before the block")
    assert first.status_code == 200, first.text

    # Bob watches Alice's presence; Alice comes online
    watcher = await connect(stack, chat.bob_token, opened)
    await subscribed(watcher, "/user/queue/presence")
    alice = await connect(stack, chat.alice_token, opened)
    online = await watcher.next_frame()
    assert (online.header("x-event"), body(online)["email"]) == ("presence", chat.alice)
    assert body(online)["online"] is True
    ids: dict[tuple[str, str], str] = {}
    for destination in (topic, "/user/queue/messages", "/user/queue/error"):
        ids["a", destination] = await subscribe(alice, destination)
    bob = await connect(stack, chat.bob_token, opened)
    for destination in (topic, "/user/queue/messages", "/user/queue/error"):
        ids["b", destination] = await subscribe(bob, destination)

    # Bob blocks
    blocked = rest(stack, "POST", f"/api/chat/{chat.id}/block", chat.bob_token)
    assert blocked.status_code == 200, blocked.text
    assert blocked.json() == {"sessionId": chat.id, "blocked": True, "blockedBy": [chat.bob]}
    for client, prefix in ((alice, "a"), (bob, "b")):
        got = {f.header("destination"): f for f in await frames(client, 2)}
        assert set(got) == {topic, "/user/queue/messages"}, got
        for frame in got.values():
            assert (frame.command, frame.header("x-event")) == ("MESSAGE", "block")
            assert frame.header("x-session-id") == chat.id
            event = body(frame)
            assert (event["change"], event["blocked"], event["blockedBy"]) == (
                "block",
                True,
                [chat.bob],
            )
            assert event["changedBy"] == chat.bob
        assert got[topic].header("subscription") == ids[prefix, topic]

    # no sends from either side: REST, bulk, edits, STOMP
    for token in (chat.alice_token, chat.bob_token):
        problem(rest_send(stack, chat, token), 403, "SESSION_BLOCKED")
    edit = {"content": "edited", "clientMessageId": str(uuid.uuid4())}
    path = f"/api/chat/{chat.id}/messages/{first.json()['messageId']}"
    problem(rest(stack, "PATCH", path, chat.alice_token, json=edit), 403, "SESSION_BLOCKED")
    send = {"sessionId": chat.id, "content": "over STOMP", "clientMessageId": str(uuid.uuid4())}
    await bob.send("/app/chat.send", json.dumps(send).encode(), ("receipt", "r-send"))
    assert await error_code(bob, "r-send") == "SESSION_BLOCKED"
    await alice.send("/app/chat.send", json.dumps(send).encode(), ("receipt", "r-send-a"))
    assert await error_code(alice, "r-send-a") == "SESSION_BLOCKED"
    typing = json.dumps({"sessionId": chat.id, "typing": True}).encode()
    await alice.send("/app/chat.typing", typing, ("receipt", "r-typing"))
    assert await error_code(alice, "r-typing") == "SESSION_BLOCKED"
    # the state in the session list and init, for both
    for token, peer in ((chat.alice_token, chat.bob), (chat.bob_token, chat.alice)):
        listed = rest(stack, "GET", "/api/chat/sessions", token).json()["sessions"]
        assert [s["blockedBy"] for s in listed if s["sessionId"] == chat.id] == [[chat.bob]]
        again = rest(
            stack, "POST", "/api/chat/init", token, json={"toEmail": peer, "intent": "dating"}
        )
        assert (again.json()["sessionId"], again.json()["blockedBy"]) == (chat.id, [chat.bob])

    # a new SUBSCRIBE to the topic is refused (ERROR with the receipt, then the close)
    late = await connect(stack, chat.alice_token, opened)
    await late.subscribe(topic, ("receipt", "r-late"))
    refusal = await late.next_frame()
    assert refusal.command == "ERROR"
    assert refusal.header("receipt-id") == "r-late"
    assert "SESSION_BLOCKED" in (refusal.header("message") or "")

    # presence: not peers any more; Alice going offline is not told to Bob
    problem(presence(stack, chat.bob_token, chat.alice), 403, "NOT_A_PEER")
    assert chat.alice not in peers_of(stack, chat.bob_token)
    await alice.close()
    await late.close()
    await nothing_within(watcher, GRACE_AND_SWEEP + 1.5)

    # only the blocker unblocks; a stranger cannot block or unblock
    problem(
        rest(stack, "DELETE", f"/api/chat/{chat.id}/block", chat.alice_token), 403, "NOT_BLOCKER"
    )
    eve = stack.token(f"eve.block.{uuid.uuid4().hex[:6]}@example.com")
    for method in ("POST", "DELETE"):
        problem(rest(stack, method, f"/api/chat/{chat.id}/block", eve), 403, "NOT_PARTICIPANT")
    unblocked = rest(stack, "DELETE", f"/api/chat/{chat.id}/block", chat.bob_token)
    assert unblocked.json() == {"sessionId": chat.id, "blocked": False, "blockedBy": []}
    lifted = await bob.next_frame()
    assert (lifted.header("destination"), lifted.header("x-event")) == (
        "/user/queue/messages",
        "unblock",
    )
    assert body(lifted)["blocked"] is False

    # all restored: subscriptions (a new one; the ended one stays silent), sends, typing,
    # presence
    again_id = await subscribe(bob, topic)
    sent = rest_send(stack, chat, chat.alice_token, "after the unblock")
    assert sent.status_code == 200, sent.text
    delivered = await frames(bob, 2)
    assert sorted(f.header("subscription") or "" for f in delivered) == sorted(
        [again_id, ids["b", "/user/queue/messages"]]
    )
    assert all(body(f)["messageId"] == sent.json()["messageId"] for f in delivered)
    assert rest_send(stack, chat, chat.bob_token, "welcome back").status_code == 200
    await frames(bob, 2)  # his own message, on the topic and his queue
    await bob.send("/app/chat.typing", typing, ("receipt", "r-typing-b"))
    typed = await frames(bob, 2)
    assert {f.command for f in typed} == {"MESSAGE", "RECEIPT"}
    alice = await connect(stack, chat.alice_token, opened)
    back = await watcher.next_frame()
    assert (body(back)["email"], body(back)["online"]) == (chat.alice, True)
    assert presence(stack, chat.bob_token, chat.alice).status_code == 200


# The STOMP authorization matrix of a blocked session, for its participant (the blocker or
# not: both are refused alike): every destination of the edge has a row.
BLOCKED_MATRIX: dict[tuple[str, str], str] = {
    ("SUBSCRIBE", destinations.SESSION_TOPIC): "error",
    ("SUBSCRIBE", "/user/queue/messages"): "receipt",
    ("SUBSCRIBE", "/user/queue/ack"): "receipt",
    ("SUBSCRIBE", "/user/queue/error"): "receipt",
    ("SUBSCRIBE", "/user/queue/presence"): "receipt",
    ("SUBSCRIBE", "/user/queue/keys"): "receipt",
    ("SEND", "/app/chat.send"): "SESSION_BLOCKED",
    ("SEND", "/app/chat.typing"): "SESSION_BLOCKED",
    ("SEND", "/app/chat.edit"): "SESSION_BLOCKED",
    ("SEND", "/app/chat.delete"): "SESSION_BLOCKED",
    # reading stays open in a blocked session (history, unread, marks)
    ("SEND", "/app/chat.read"): "receipt",
}


def test_the_blocked_matrix_covers_every_destination() -> None:
    every = {("SUBSCRIBE", d) for d in destinations.SUBSCRIBE} | {
        ("SEND", d) for d in destinations.SEND
    }
    assert set(BLOCKED_MATRIX) == every


@pytest.mark.parametrize("blocker", ["self", "peer"])
async def test_blocked_matrix(stack: Stack, opened: list[StompClient], blocker: str) -> None:
    chat = open_chat(stack, "blockmatrix")
    sent = rest_send(stack, chat, chat.alice_token, "to change")
    assert sent.status_code == 200, sent.text
    token = chat.alice_token if blocker == "self" else chat.bob_token
    assert rest(stack, "POST", f"/api/chat/{chat.id}/block", token).status_code == 200
    bodies: dict[str, dict[str, Any]] = {
        "/app/chat.send": {"sessionId": chat.id, "content": "x", "clientMessageId": "c"},
        "/app/chat.typing": {"sessionId": chat.id},
        "/app/chat.edit": {"sessionId": chat.id, "content": "x", "clientMessageId": "c"},
        "/app/chat.delete": {"sessionId": chat.id, "clientMessageId": "c"},
        "/app/chat.read": {"sessionId": chat.id, "upToSeq": 1},
    }
    for (frame, destination), expected in BLOCKED_MATRIX.items():
        client = await connect(stack, chat.alice_token, opened)
        await subscribed(client, "/user/queue/error", ("id", "errors"))
        if frame == "SUBSCRIBE":
            await client.subscribe(
                destination.replace(destinations.SESSION_ID, chat.id), ("receipt", "r")
            )
        else:
            payload = dict(bodies[destination])
            if "clientMessageId" in payload:
                payload["clientMessageId"] = str(uuid.uuid4())
            if destination in ("/app/chat.edit", "/app/chat.delete"):
                payload["messageId"] = sent.json()["messageId"]
            await client.send(destination, json.dumps(payload).encode(), ("receipt", "r"))
        answer = await client.next_frame()
        case = (frame, destination, answer.command, answer.headers, answer.body)
        if expected == "receipt":
            assert answer.command == "RECEIPT", case
        elif expected == "error":
            assert answer.command == "ERROR", case
            assert "SESSION_BLOCKED" in (answer.header("message") or ""), case
        else:
            assert answer.header("destination") == "/user/queue/error", case
            assert body(answer)["code"] == expected, case
        await client.close()
