"""End-to-end encrypted messages through the gateway of the whole stack, as two clients would
use them: keys published to the registry, a text encrypted for each device (X25519, HKDF,
AES-GCM), sent over REST and STOMP, delivered, resumed and read back byte for byte, decrypted
by the recipient; the tables never hold the text; refusals of bad envelopes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from chat_stomp.frames import Frame
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chat_testing.stomp import StompClient

from .conftest import E2E_DATABASE_URL, Chat, Stack, open_chat, subscribed

pytestmark = pytest.mark.e2e

ALG = "X25519-HKDF-SHA256+A256GCM"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Device:
    email: str
    key_id: str
    private: X25519PrivateKey

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )


def _kek(shared: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"chat envelope").derive(shared)


def encrypt(text: str, sender: Device, recipients: list[tuple[str, str, bytes]]) -> dict[str, Any]:
    """The envelope a client makes: a content key encrypts the text once; for each device
    (email, keyId, raw public key) the content key is wrapped with an ephemeral X25519 key."""
    content_key, nonce = AESGCM.generate_key(256), os.urandom(12)
    wrapped = []
    for email, key_id, public in recipients:
        ephemeral = X25519PrivateKey.generate()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public))
        sealed = AESGCM(_kek(shared)).encrypt(b"\0" * 12, content_key, None)
        epub = ephemeral.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        wrapped.append({"email": email, "keyId": key_id, "wrappedKey": b64(epub + sealed)})
    return {
        "alg": ALG,
        "senderKeyId": sender.key_id,
        "nonce": b64(nonce),
        "recipients": wrapped,
        "ciphertext": b64(AESGCM(content_key).encrypt(nonce, text.encode(), None)),
    }


def decrypt(envelope: dict[str, Any], me: Device) -> str:
    [mine] = [
        r for r in envelope["recipients"] if (r["email"], r["keyId"]) == (me.email, me.key_id)
    ]
    blob = unb64(mine["wrappedKey"])
    shared = me.private.exchange(X25519PublicKey.from_public_bytes(blob[:32]))
    content_key = AESGCM(_kek(shared)).decrypt(b"\0" * 12, blob[32:], None)
    nonce = unb64(envelope["nonce"])
    return AESGCM(content_key).decrypt(nonce, unb64(envelope["ciphertext"]), None).decode()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ws(stack: Stack, token: str) -> str:
    return stack.gateway.replace("http://", "ws://") + f"/ws?access_token={token}"


@dataclass
class Keyed:
    chat: Chat
    alice: Device
    bob: Device

    def devices(self) -> list[tuple[str, str, bytes]]:
        return [(d.email, d.key_id, d.public) for d in (self.bob, self.alice)]


@pytest.fixture
async def keyed(stack: Stack) -> Keyed:
    """A chat whose two users published a key each, and what Alice reads of them."""
    chat = open_chat(stack, "envelope")
    alice = Device(chat.alice, "alice-laptop", X25519PrivateKey.generate())
    bob = Device(chat.bob, "bob-phone", X25519PrivateKey.generate())
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
        for device, token in ((alice, chat.alice_token), (bob, chat.bob_token)):
            put = await client.put(
                f"/api/chat/keys/{device.key_id}",
                json={"algorithm": "X25519", "publicKey": b64(device.public)},
                headers=auth(token),
            )
            assert put.status_code == 201, put.text
        read = await client.get(f"/api/chat/{chat.id}/keys", headers=auth(chat.alice_token))
        assert read.status_code == 200, read.text
    published = {
        (user["email"], key["keyId"]): unb64(key["publicKey"])
        for user in read.json()["participants"]
        for key in user["keys"]
    }
    assert published == {
        (alice.email, alice.key_id): alice.public,
        (bob.email, bob.key_id): bob.public,
    }
    return Keyed(chat, alice, bob)


@pytest.fixture
async def opened() -> AsyncIterator[list[StompClient]]:
    clients: list[StompClient] = []
    yield clients
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def messages(client: StompClient, count: int, within: float = 10.0) -> list[Frame]:
    got: list[Frame] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            frame = await client.next_frame(within)
            assert frame.command != "ERROR", frame.headers
            if frame.command == "MESSAGE":
                got.append(frame)
    return got


async def rest_send(stack: Stack, token: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
        return await client.post("/api/chat/message", json=body, headers=auth(token))


async def stored_anywhere(session_id: str, needle: str) -> list[str]:
    """The tables' rows of the session (and every outbox row) whose text shows ``needle`` as
    text, as hex (bytea) or in base64."""
    forms = [needle, needle.encode().hex(), b64(needle.encode())]
    conn = await asyncpg.connect(E2E_DATABASE_URL)
    try:
        rows = [
            *await conn.fetch(
                "SELECT t::text AS row FROM chat_messages t WHERE session_id = $1",
                uuid.UUID(session_id),
            ),
            *await conn.fetch(
                "SELECT t::text AS row FROM chat_message_changes t WHERE session_id = $1",
                uuid.UUID(session_id),
            ),
            *await conn.fetch(
                "SELECT t::text || convert_from(t.payload, 'UTF8') AS row"
                " FROM chat_message_outbox t"
            ),
            *await conn.fetch(
                "SELECT t::text || convert_from(t.payload, 'UTF8') AS row"
                " FROM chat_message_outbox_dead t"
            ),
        ]
    finally:
        await conn.close()
    return [r["row"] for r in rows if any(form in r["row"] for form in forms)]


async def test_rest_an_envelope_reaches_the_peer_unchanged_and_the_server_never_has_the_text(
    stack: Stack, keyed: Keyed, opened: list[StompClient]
) -> None:
    chat = keyed.chat
    text = f"the key is under the blue pot {uuid.uuid4().hex[:6]}"
    envelope = encrypt(text, keyed.alice, keyed.devices())
    topic = await StompClient.open(ws(stack, chat.bob_token))
    queue = await StompClient.open(ws(stack, chat.bob_token))
    opened += [topic, queue]
    await subscribed(topic, f"/topic/session.{chat.id}")
    await subscribed(queue, "/user/queue/messages")
    cid = str(uuid.uuid4())
    body = {"sessionId": chat.id, "clientMessageId": cid, "encrypted": envelope}
    answer = await rest_send(stack, chat.alice_token, body)
    assert answer.status_code == 200, answer.text
    sent = answer.json()
    assert (sent["content"], sent["encrypted"]) == ("", envelope)
    for subscriber in (topic, queue):
        [frame] = await messages(subscriber, 1)
        assert (frame.header("x-event"), frame.header("x-seq")) == ("message", str(sent["seq"]))
        delivered = json.loads(frame.body)
        assert delivered["encrypted"] == envelope
        assert decrypt(delivered["encrypted"], keyed.bob) == text
    # the sender's other devices read it too (the envelope names Alice's own key)
    assert decrypt(sent["encrypted"], keyed.alice) == text
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
        bob = auth(chat.bob_token)
        history = (await client.get(f"/api/chat/{chat.id}/history", headers=bob)).json()
        assert [m["encrypted"] for m in history["messages"]] == [envelope]
        events = (await client.get(f"/api/chat/{chat.id}/events?after=0", headers=bob)).json()
        assert [e["message"]["encrypted"] for e in events["events"]] == [envelope]
        unread = (await client.get(f"/api/chat/{chat.id}/unread", headers=bob)).json()
        assert unread["count"] == 1
        assert decrypt(unread["messages"][0]["encrypted"], keyed.bob) == text
        sessions = (await client.get("/api/chat/sessions", headers=bob)).json()["sessions"]
        [summary] = [s for s in sessions if s["sessionId"] == chat.id]
        assert summary["unreadCount"] == 1
        assert (summary["lastMessage"]["encrypted"], summary["lastMessage"]["content"]) == (
            True,
            "",
        )
        # a retry is the same message, with the same envelope
        again = await client.post("/api/chat/message", json=body, headers=auth(chat.alice_token))
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.json()["encrypted"] == envelope
        read = await client.post(
            f"/api/chat/{chat.id}/read", json={"upToSeq": sent["seq"]}, headers=bob
        )
        assert read.status_code == 200
        unread = (await client.get(f"/api/chat/{chat.id}/unread", headers=bob)).json()
        assert unread["count"] == 0
    assert await stored_anywhere(chat.id, text) == []


async def test_stomp_send_edit_and_resume_carry_the_envelope(
    stack: Stack, keyed: Keyed, opened: list[StompClient]
) -> None:
    chat = keyed.chat
    alice = await StompClient.open(ws(stack, chat.alice_token))
    opened.append(alice)
    await subscribed(alice, "/user/queue/ack")
    await subscribed(alice, "/user/queue/error")
    first = encrypt("over the socket", keyed.alice, keyed.devices())
    body = {"sessionId": chat.id, "clientMessageId": str(uuid.uuid4()), "encrypted": first}
    await alice.send("/app/chat.send", json.dumps(body).encode(), ("receipt", "r-send"))
    ack = await alice.next_frame()
    assert (ack.header("destination"), ack.header("x-event")) == ("/user/queue/ack", "ack")
    sent = json.loads(ack.body)
    assert sent["encrypted"] == first
    assert (await alice.next_frame()).header("receipt-id") == "r-send"
    # an edit of an encrypted message is a new envelope
    second = encrypt("over the socket, edited", keyed.alice, keyed.devices())
    edit = {
        "sessionId": chat.id,
        "messageId": sent["messageId"],
        "clientMessageId": str(uuid.uuid4()),
        "encrypted": second,
    }
    await alice.send("/app/chat.edit", json.dumps(edit).encode(), ("receipt", "r-edit"))
    change = json.loads((await alice.next_frame()).body)
    assert (change["change"], change["encrypted"]) == ("edit", second)
    assert (await alice.next_frame()).header("receipt-id") == "r-edit"
    # text for an encrypted message is refused
    as_text = {**edit, "clientMessageId": str(uuid.uuid4()), "content": "plain"}
    del as_text["encrypted"]
    await alice.send("/app/chat.edit", json.dumps(as_text).encode(), ("receipt", "r-text"))
    error = await alice.next_frame()
    assert error.header("destination") == "/user/queue/error"
    assert json.loads(error.body)["code"] == "ENCRYPTION_MISMATCH"
    # Bob, away until now, resumes: the message in its current state, then the edit
    bob = await StompClient.open(ws(stack, chat.bob_token))
    opened.append(bob)
    await bob.subscribe(f"/topic/session.{chat.id}", ("x-resume-after-seq", "0"))
    got = await messages(bob, 2)
    assert [(f.header("x-event"), f.header("x-seq")) for f in got] == [
        ("message", str(sent["seq"])),
        ("edit", str(change["seq"])),
    ]
    replayed = json.loads(got[0].body)
    assert replayed["encrypted"] == second  # the message as it is now
    assert decrypt(replayed["encrypted"], keyed.bob) == "over the socket, edited"
    assert json.loads(got[1].body)["encrypted"] == second
    # a delete erases it: the tombstone has no envelope, nor has the edit any more
    delete = {
        "sessionId": chat.id,
        "messageId": sent["messageId"],
        "clientMessageId": str(uuid.uuid4()),
    }
    await alice.send("/app/chat.delete", json.dumps(delete).encode(), ("receipt", "r-delete"))
    assert json.loads((await alice.next_frame()).body)["change"] == "delete"
    assert (await alice.next_frame()).header("receipt-id") == "r-delete"
    conn = await asyncpg.connect(E2E_DATABASE_URL)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM chat_messages m JOIN chat_message_changes c"
            " ON c.message_id = m.id WHERE m.id = $1"
            " AND (m.encrypted IS NOT NULL OR c.encrypted IS NOT NULL)",
            uuid.UUID(sent["messageId"]),
        )
    finally:
        await conn.close()
    assert left == 0


async def test_bad_envelopes_are_refused_over_rest_and_stomp(
    stack: Stack, keyed: Keyed, opened: list[StompClient]
) -> None:
    chat = keyed.chat
    good = encrypt("fine", keyed.alice, keyed.devices())

    def body(**fields: Any) -> dict[str, Any]:
        return {"sessionId": chat.id, "clientMessageId": str(uuid.uuid4()), **fields}

    cases: list[tuple[dict[str, Any], int, str, str]] = [
        (body(content="hi", encrypted=good), 422, "CONTENT_OR_ENCRYPTED", "encrypted"),
        (body(), 422, "CONTENT_OR_ENCRYPTED", "content"),
        (
            body(encrypted={**good, "ciphertext": "A" * 13_000}),
            413,
            "ENCRYPTED_TOO_LARGE",
            "encrypted",
        ),
        (
            body(encrypted={**good, "ciphertext": "QR"}),
            422,
            "ENVELOPE_INVALID",
            "encrypted.ciphertext",
        ),
        (
            body(encrypted={**good, "recipients": [{"email": "eve@example.com", "keyId": "e"}]}),
            422,
            "RECIPIENT_NOT_PARTICIPANT",
            "encrypted.recipients",
        ),
    ]
    for request, status, code, field in cases:
        answer = await rest_send(stack, chat.alice_token, request)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert (answer.json()["code"], answer.json().get("field")) == (code, field), answer.text
    malformed = await rest_send(
        stack, chat.alice_token, body(encrypted={**good, "ciphertext": "not base64!"})
    )
    assert malformed.status_code == 422
    assert "encrypted.ciphertext" in malformed.text
    # the same over STOMP: the edge refuses what does not parse, message-svc the rest
    alice = await StompClient.open(ws(stack, chat.alice_token))
    opened.append(alice)
    await subscribed(alice, "/user/queue/error")
    await alice.send("/app/chat.send", json.dumps(body(content="hi", encrypted=good)).encode())
    error = json.loads((await alice.next_frame()).body)
    assert error["code"] == "CONTENT_OR_ENCRYPTED"
    oversize = body(encrypted={**good, "ciphertext": "A" * 13_000})
    await alice.send("/app/chat.send", json.dumps(oversize).encode())
    assert json.loads((await alice.next_frame()).body)["code"] == "ENCRYPTED_TOO_LARGE"
    await alice.send(
        "/app/chat.send", json.dumps(body(encrypted={**good, "nonce": "a+b/"})).encode()
    )
    refused = json.loads((await alice.next_frame()).body)
    assert refused["code"] == "INVALID_INPUT"
    assert "encrypted.nonce" in refused["detail"]
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
        history = await client.get(f"/api/chat/{chat.id}/history", headers=auth(chat.bob_token))
    assert history.json()["messages"] == []
