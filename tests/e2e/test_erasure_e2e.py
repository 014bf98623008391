"""Erasure of a deleted user through the gateway of the whole stack (REST and STOMP): Alice
and Bob chat (text, an edit, encrypted messages, over REST and STOMP), Bob is connected live;
FlairBit deletes Alice and tells chat. Alice's live connection closes with ERROR USER_DELETED;
Bob gets the session's `closed` event (topic and queue) and sees the session CLOSED over REST,
his sends are refused (REST and STOMP) and so are new subscriptions; the history shows Alice's
messages as tombstones of a placeholder; no column of any table holds Alice's email or her
texts, nor does Redis. A repeated call changes nothing, an unknown user is fine, and only
FlairBit's token opens the route."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from chat_common import routing
from chat_testing.stomp import StompClient
from chat_testing.waiting import eventually

from .conftest import E2E_DATABASE_URL, E2E_REDIS_DB, Stack, open_chat, subscribed
from .test_encrypted_e2e import Device, b64, decrypt, encrypt

pytestmark = pytest.mark.e2e

ZERO = {
    "sessionsClosed": 0,
    "messagesErased": 0,
    "changesErased": 0,
    "keysRemoved": 0,
    "outboxRowsPurged": 0,
    "cacheEntriesRemoved": 0,
}


@pytest.fixture
async def opened() -> AsyncIterator[list[StompClient]]:
    clients: list[StompClient] = []
    yield clients
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ws(stack: Stack, token: str) -> str:
    return stack.gateway.replace("http://", "ws://") + f"/ws?access_token={token}"


def service_token(stack: Stack) -> str:
    answer = httpx.post(f"{stack.flairbit}/dev/service-token", timeout=5)
    return str(answer.json()["token"])


def user_deleted(stack: Stack, email: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway}/internal/flairbit/user-deleted",
        json={"email": email},
        headers=headers,
        timeout=10,
    )


def problem(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == code, answer.text


async def next_message(client: StompClient) -> Any:
    frame = await client.next_frame()
    assert frame.command == "MESSAGE", (frame.command, frame.headers, frame.body)
    return frame


async def ack_and_receipt(client: StompClient, receipt_id: str) -> Any:
    """The ack of a send and its RECEIPT, in whichever order they come; the sender's own copy
    on /user/queue/messages may come between them."""
    ack, receipted = None, False
    async with asyncio.timeout(10):
        while ack is None or not receipted:
            frame = await client.next_frame()
            if frame.command == "RECEIPT":
                assert frame.header("receipt-id") == receipt_id
                receipted = True
            elif frame.header("x-event") == "ack":
                ack = frame
            else:
                assert frame.command == "MESSAGE", (frame.command, frame.headers, frame.body)
    return ack


async def sweep(needles: list[str]) -> list[tuple[str, str, str]]:
    """Every text, json, jsonb and bytea column of every table in the database (cast to text;
    bytea as its hex too) whose value holds one of ``needles``: (table, column, needle)."""
    conn = await asyncpg.connect(E2E_DATABASE_URL)
    found = []
    try:
        columns = await conn.fetch(
            """
            SELECT c.table_schema, c.table_name, c.column_name, c.data_type
            FROM information_schema.columns c
            JOIN information_schema.tables t
              ON t.table_schema = c.table_schema AND t.table_name = c.table_name
            WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema')
              AND t.table_type = 'BASE TABLE'
              AND c.data_type IN ('text', 'character varying', 'json', 'jsonb', 'bytea')
            """
        )
        assert {"chat_messages", "chat_participants", "chat_user_keys"} <= {
            c["table_name"] for c in columns
        }
        for c in columns:
            column = f'"{c["table_schema"]}"."{c["table_name"]}"."{c["column_name"]}"'
            source = f'"{c["table_schema"]}"."{c["table_name"]}"'
            for needle in needles:
                forms = [needle]
                if c["data_type"] == "bytea":
                    forms.append(needle.encode().hex())
                for form in forms:
                    hits = await conn.fetchval(
                        f"SELECT count(*) FROM {source} WHERE strpos({column}::text, $1) > 0",
                        form,
                    )
                    if hits:
                        found.append((c["table_name"], c["column_name"], needle))
    finally:
        await conn.close()
    return found


async def test_a_deleted_user_is_erased_and_the_peer_sees_the_session_closed(
    stack: Stack, opened: list[StompClient]
) -> None:
    chat = open_chat(stack, "erase")
    topic = f"/topic/session.{chat.id}"
    alice_dev = Device(chat.alice, "alice-phone", X25519PrivateKey.generate())
    bob_dev = Device(chat.bob, "bob-phone", X25519PrivateKey.generate())
    devices = [(d.email, d.key_id, d.public) for d in (alice_dev, bob_dev)]
    tag = uuid.uuid4().hex[:6]
    texts = {
        "rest": f"alice over rest {tag}",
        "edited": f"alice edited it {tag}",
        "stomp": f"alice over stomp {tag}",
        "secret": f"alice encrypted {tag}",
    }
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
        for device, token in ((alice_dev, chat.alice_token), (bob_dev, chat.bob_token)):
            put = await client.put(
                f"/api/chat/keys/{device.key_id}",
                json={"algorithm": "X25519", "publicKey": b64(device.public)},
                headers=auth(token),
            )
            assert put.status_code == 201, put.text

        async def send(token: str, **fields: Any) -> dict[str, Any]:
            body = {"sessionId": chat.id, "clientMessageId": str(uuid.uuid4()), **fields}
            answer = await client.post("/api/chat/message", json=body, headers=auth(token))
            assert answer.status_code == 200, answer.text
            sent: dict[str, Any] = answer.json()
            return sent

        first = await send(chat.alice_token, content=texts["rest"])
        edited = await client.patch(
            f"/api/chat/{chat.id}/messages/{first['messageId']}",
            json={"content": texts["edited"], "clientMessageId": str(uuid.uuid4())},
            headers=auth(chat.alice_token),
        )
        assert edited.status_code == 200, edited.text
        await send(chat.alice_token, encrypted=encrypt(texts["secret"], alice_dev, devices))
        bob_text = await send(chat.bob_token, content=f"bob answers {tag}")
        bob_secret = encrypt(f"bob encrypted {tag}", bob_dev, devices)
        await send(chat.bob_token, encrypted=bob_secret)

        # Alice live over STOMP, sending once more; Bob live on the topic and his queues
        alice = await StompClient.open(ws(stack, chat.alice_token))
        opened.append(alice)
        await subscribed(alice, "/user/queue/messages")
        await subscribed(alice, "/user/queue/ack")
        body = {
            "sessionId": chat.id,
            "content": texts["stomp"],
            "clientMessageId": str(uuid.uuid4()),
        }
        await alice.send("/app/chat.send", json.dumps(body).encode(), ("receipt", "r-a"))
        ack = await ack_and_receipt(alice, "r-a")
        bob = await StompClient.open(ws(stack, chat.bob_token))
        opened.append(bob)
        await subscribed(bob, topic, ("x-resume-after-seq", str(ack.header("x-seq"))))
        await subscribed(bob, "/user/queue/messages")
        await subscribed(bob, "/user/queue/error")

        # before: the sweep finds her (it can see what the erasure must remove)
        before = {(table, needle) for table, _, needle in await sweep([chat.alice, texts["stomp"]])}
        assert {("chat_participants", chat.alice), ("chat_messages", texts["stomp"])} <= before
        probe = aioredis.Redis(port=6379, db=E2E_REDIS_DB)
        try:  # and Redis holds keys named by her user key (her connection's presence, seat)
            alice_key = routing.user_key(chat.alice).split(".")[1]
            assert [k async for k in probe.scan_iter(match=f"*{alice_key}*")]
        finally:
            await probe.aclose()

        # FlairBit deletes Alice, then tells chat
        gone = await client.delete(f"{stack.flairbit}/dev/users/{chat.alice}")
        assert gone.status_code == 204
        erased = user_deleted(stack, chat.alice, auth(service_token(stack)))
        assert erased.status_code == 200, erased.text
        report = erased.json()
        assert report["sessionsClosed"] == 1
        assert report["messagesErased"] == 3  # over REST (edited since), encrypted, over STOMP
        assert report["changesErased"] == 1
        assert report["keysRemoved"] == 1

        # Alice's live connection: ERROR USER_DELETED, then the close (1008)
        error = await alice.next_frame()
        while error.command == "MESSAGE":  # what was already on its way to her
            error = await alice.next_frame()
        assert error.command == "ERROR", error
        assert "USER_DELETED" in (error.header("message") or "")
        async with asyncio.timeout(10):
            await alice.socket.wait_closed()
        assert alice.socket.close_code == 1008

        # Bob: the closed event on the topic (its last frame) and on his queue
        got = {}
        for _ in range(2):
            frame = await next_message(bob)
            got[frame.header("destination")] = frame
        assert set(got) == {topic, "/user/queue/messages"}
        for frame in got.values():
            assert frame.header("x-event") == "closed"
            assert frame.header("x-session-id") == chat.id
            event = json.loads(frame.body)
            assert (event["state"], event["reason"]) == ("CLOSED", "PARTICIPANT_DELETED")
            assert chat.alice not in frame.body.decode()

        # over REST: the session list says CLOSED, the peer is a placeholder
        listed = (await client.get("/api/chat/sessions", headers=auth(chat.bob_token))).json()
        [summary] = [s for s in listed["sessions"] if s["sessionId"] == chat.id]
        assert (summary["state"], summary["closedReason"]) == ("CLOSED", "PARTICIPANT_DELETED")
        assert summary["peer"]["displayName"] == "Deleted user"
        assert summary["peer"]["email"].endswith("@erased.invalid")
        placeholder = summary["peer"]["email"]

        # Bob's sends refused: REST, STOMP; a new SUBSCRIBE to the topic refused
        refused = await client.post(
            "/api/chat/message",
            json={"sessionId": chat.id, "content": "hello?", "clientMessageId": str(uuid.uuid4())},
            headers=auth(chat.bob_token),
        )
        problem(refused, 403, "SESSION_CLOSED")
        again = {"sessionId": chat.id, "content": "still?", "clientMessageId": str(uuid.uuid4())}
        await bob.send("/app/chat.send", json.dumps(again).encode(), ("receipt", "r-b"))
        stomp_error = await next_message(bob)
        assert stomp_error.header("destination") == "/user/queue/error"
        assert json.loads(stomp_error.body)["code"] == "SESSION_CLOSED"
        typing = json.dumps({"sessionId": chat.id, "typing": True}).encode()
        await bob.send("/app/chat.typing", typing, ("receipt", "r-t"))
        assert json.loads((await next_message(bob)).body)["code"] == "SESSION_CLOSED"
        late = await StompClient.open(ws(stack, chat.bob_token))
        opened.append(late)
        await late.subscribe(topic, ("receipt", "r-late"))
        refusal = await late.next_frame()
        assert refusal.command == "ERROR"
        assert "SESSION_CLOSED" in (refusal.header("message") or "")

        # the history: Alice's messages are tombstones of the placeholder, Bob's are intact
        history = await client.get(f"/api/chat/{chat.id}/history", headers=auth(chat.bob_token))
        assert history.status_code == 200, history.text
        by_sender: dict[str, list[dict[str, Any]]] = {}
        for m in history.json()["messages"]:
            by_sender.setdefault(m["senderEmail"], []).append(m)
        assert set(by_sender) == {placeholder, chat.bob}
        assert len(by_sender[placeholder]) == 3
        for m in by_sender[placeholder]:
            assert (m["deleted"], m["content"], m["encrypted"]) == (True, "", None)
            assert m["senderDisplayName"] == "Deleted user"
        mine = {m["messageId"]: m for m in by_sender[chat.bob]}
        assert mine[bob_text["messageId"]]["content"] == f"bob answers {tag}"
        [kept] = [m for m in by_sender[chat.bob] if m["encrypted"] is not None]
        assert decrypt(kept["encrypted"], bob_dev) == f"bob encrypted {tag}"
        events = await client.get(
            f"/api/chat/{chat.id}/events?after=0", headers=auth(chat.bob_token)
        )
        assert events.status_code == 200
        assert chat.alice not in events.text
        assert not any(text in events.text for text in texts.values())
        # Alice's token, still unexpired, finds nothing of hers
        hers = await client.get("/api/chat/sessions", headers=auth(chat.alice_token))
        assert hers.json()["sessions"] == []

    # no table holds Alice's email or her texts
    assert await sweep([chat.alice, *texts.values()]) == []

    # nor does Redis (her presence goes once her connection's close is handled)
    redis = aioredis.Redis(port=6379, db=E2E_REDIS_DB)
    digest = routing.user_key(chat.alice).split(".")[1]

    async def forgotten() -> bool:
        for pattern in (f"*{chat.alice}*", f"*{digest}*"):
            if [k async for k in redis.scan_iter(match=pattern)]:
                return False
        return await redis.zscore("chat:presence:deadlines", routing.user_key(chat.alice)) is None

    try:
        await eventually(forgotten, within=10.0, what="Redis to forget the deleted user")
    finally:
        await redis.aclose()

    # a repeated call changes nothing
    repeated = user_deleted(stack, chat.alice, auth(service_token(stack)))
    assert repeated.status_code == 200, repeated.text
    assert repeated.json() == ZERO


def test_unknown_users_are_fine_and_only_flairbit_may_ask(stack: Stack) -> None:
    service = auth(service_token(stack))
    unknown = user_deleted(stack, f"nobody.{uuid.uuid4().hex[:6]}@example.com", service)
    assert unknown.status_code == 200, unknown.text
    assert unknown.json() == ZERO
    chat = open_chat(stack, "erase-auth")
    problem(user_deleted(stack, chat.bob, auth(chat.alice_token)), 401, "TOKEN_INVALID")
    anonymous = user_deleted(stack, chat.bob, {})
    assert anonymous.status_code == 401
    for bad in ({}, {"email": 7}, {"email": "x"}, {"email": "a@b.c", "more": 1}):
        answer = httpx.post(
            f"{stack.gateway}/internal/flairbit/user-deleted", json=bad, headers=service, timeout=10
        )
        assert answer.status_code in (400, 422), answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
    # nobody was erased by all this: the session is still open
    listed = httpx.get(
        f"{stack.gateway}/api/chat/sessions", headers=auth(chat.bob_token), timeout=10
    )
    [summary] = [s for s in listed.json()["sessions"] if s["sessionId"] == chat.id]
    assert summary["state"] == "OPEN"
