"""The public-key registry through the gateway (REST and STOMP) on the whole stack: a key
published by one participant reaches the peer and the publisher's other devices as a `keys`
event on /user/queue/keys (session-svc -> outbox -> relay -> RabbitMQ -> edge), the peer reads
it from the session's keys, a stranger is refused and told nothing, a replacement and a
revocation are announced; the device limit and bad input are 4xx problems."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from chat_testing.stomp import StompClient

from .conftest import Stack, open_chat, subscribed

pytestmark = pytest.mark.e2e

QUEUE = "/user/queue/keys"
QUIET = 0.5  # for an event that must not come, once a later one has come through


def x25519_text() -> str:
    raw = (
        x25519.X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def p256_text() -> str:
    raw = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def watcher(stack: Stack, token: str) -> StompClient:
    url = stack.gateway.replace("http://", "ws://") + "/ws"
    client = await StompClient.open(url, headers=(("passcode", token),))
    await subscribed(client, QUEUE)
    return client


async def key_event(client: StompClient) -> dict[str, Any]:
    frame = await client.next_frame()
    assert frame.command == "MESSAGE", (frame.command, frame.headers, frame.body)
    assert frame.header("destination") == QUEUE
    assert frame.header("x-event") == "keys"
    assert frame.header("content-type") == "application/json"
    assert frame.header("x-session-id") is None
    body: dict[str, Any] = json.loads(frame.body)
    return body


async def nothing(client: StompClient) -> None:
    try:
        frame = await client.next_frame(QUIET)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected {frame.command} {frame.headers} {frame.body!r}")


async def test_key_changes_reach_peers_who_read_the_session_keys(stack: Stack) -> None:
    chat = open_chat(stack, "keys")
    eve = stack.token(f"eve.keys.{uuid.uuid4().hex[:6]}@example.com")
    bob_device = await watcher(stack, chat.bob_token)
    alice_other_device = await watcher(stack, chat.alice_token)
    stranger = await watcher(stack, eve)
    try:
        async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
            first = x25519_text()
            put = await client.put(
                "/api/chat/keys/phone",
                json={"algorithm": "X25519", "publicKey": first},
                headers=bearer(chat.alice_token),
            )
            assert put.status_code == 201, put.text
            stored = put.json()
            for device in (bob_device, alice_other_device):
                event = await key_event(device)
                assert event == {
                    "email": chat.alice,
                    "keyId": "phone",
                    "algorithm": "X25519",
                    "change": "added",
                    "fingerprint": stored["fingerprint"],
                    "version": stored["version"],
                    "changedAt": event["changedAt"],
                }

            keys = await client.get(f"/api/chat/{chat.id}/keys", headers=bearer(chat.bob_token))
            assert keys.status_code == 200, keys.text
            held = {p["email"]: p["keys"] for p in keys.json()["participants"]}
            assert held == {chat.alice: [stored], chat.bob: []}

            refused = await client.get(f"/api/chat/{chat.id}/keys", headers=bearer(eve))
            assert refused.status_code == 403
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["code"] == "NOT_PARTICIPANT"
            unknown = await client.get(
                f"/api/chat/{uuid.uuid4()}/keys", headers=bearer(chat.bob_token)
            )
            assert (unknown.status_code, unknown.json()["code"]) == (404, "SESSION_NOT_FOUND")

            second = p256_text()
            replaced = await client.put(
                "/api/chat/keys/phone",
                json={"algorithm": "ECDH-P256", "publicKey": second},
                headers=bearer(chat.alice_token),
            )
            assert replaced.status_code == 200, replaced.text
            event = await key_event(bob_device)
            assert await key_event(alice_other_device) == event
            assert (event["change"], event["algorithm"]) == ("replaced", "ECDH-P256")
            assert event["fingerprint"] == replaced.json()["fingerprint"]
            assert event["previousFingerprint"] == stored["fingerprint"]
            assert event["version"] > stored["version"]

            revoked = await client.delete("/api/chat/keys/phone", headers=bearer(chat.alice_token))
            assert revoked.status_code == 204
            event = await key_event(bob_device)
            assert await key_event(alice_other_device) == event
            assert (event["change"], event["keyId"]) == ("revoked", "phone")
            assert event["fingerprint"] == replaced.json()["fingerprint"]
            keys = await client.get(f"/api/chat/{chat.id}/keys", headers=bearer(chat.alice_token))
            assert all(p["keys"] == [] for p in keys.json()["participants"])

            # Bob's own key: Alice hears of it; Eve, who shares no session with either, has
            # heard of nothing all along
            bobs = await client.put(
                "/api/chat/keys/b1",
                json={"algorithm": "X25519", "publicKey": x25519_text()},
                headers=bearer(chat.bob_token),
            )
            assert bobs.status_code == 201
            assert (await key_event(alice_other_device))["email"] == chat.bob
            await nothing(stranger)
    finally:
        for device in (bob_device, alice_other_device, stranger):
            await device.close()


def test_own_keys_limits_and_bad_input_through_the_gateway(stack: Stack) -> None:
    me = stack.token(f"dana.keys.{uuid.uuid4().hex[:6]}@example.com")
    with httpx.Client(base_url=stack.gateway, timeout=10) as client:

        def put(key_id: str, body: Any) -> httpx.Response:
            return client.put(f"/api/chat/keys/{key_id}", json=body, headers=bearer(me))

        published = [
            put(f"d{n}", {"algorithm": "X25519", "publicKey": x25519_text()}) for n in range(10)
        ]
        assert [p.status_code for p in published] == [201] * 10
        over = put("d10", {"algorithm": "X25519", "publicKey": x25519_text()})
        assert over.status_code == 409
        assert over.json()["code"] == "KEY_LIMIT_REACHED"
        own = client.get("/api/chat/keys", headers=bearer(me))
        assert [k["keyId"] for k in own.json()["keys"]] == [f"d{n}" for n in range(10)]
        same = put("d0", {"algorithm": "X25519", "publicKey": published[0].json()["publicKey"]})
        assert (same.status_code, same.json()) == (200, published[0].json())

        good = {"algorithm": "X25519", "publicKey": x25519_text()}
        for key_id, body, status, code in [
            ("bad.id", good, 422, "KEY_ID_INVALID"),
            ("d0", {**good, "algorithm": "RSA-2048"}, 422, "ALGORITHM_UNSUPPORTED"),
            ("d0", {**good, "publicKey": p256_text()}, 422, "PUBLIC_KEY_INVALID"),
            ("d0", {**good, "publicKey": "A" * 43}, 422, "PUBLIC_KEY_INVALID"),
            ("d0", {**good, "email": "someone@example.com"}, 422, "INVALID_INPUT"),
        ]:
            answer = put(key_id, body)
            assert answer.status_code == status, (key_id, body, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] == code
        garbled = client.put(
            "/api/chat/keys/d0",
            content=b"{not json",
            headers={**bearer(me), "content-type": "application/json"},
        )
        assert garbled.status_code == 400
        assert client.put("/api/chat/keys/d0", json=good).status_code == 401
        gone = client.delete("/api/chat/keys/never", headers=bearer(me))
        assert (gone.status_code, gone.json()["code"]) == (404, "KEY_NOT_FOUND")
        assert client.delete("/api/chat/keys/d9", headers=bearer(me)).status_code == 204
        assert put("d10", good).status_code == 201  # a revoked key frees its place
        own = client.get("/api/chat/keys", headers=bearer(me))
        assert [k["keyId"] for k in own.json()["keys"]] == [f"d{n}" for n in range(9)] + ["d10"]
