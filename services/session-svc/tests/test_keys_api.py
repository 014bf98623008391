"""The public-key registry against the real PostgreSQL: publish, replace, revoke, read; the
events each change writes to the outbox in its own transaction (to the owner and every peer);
the device limit under concurrent publishes; bad input refused with problems."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from chat_common import routing
from chat_common.keys import KeyChangeEvent
from session_svc import keys

from .test_sessions_api import auth, init, instance

MAX_KEYS = 3


@pytest.fixture
async def client(
    db_pool: asyncpg.Pool, database_url: str, flairbit_reset: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with instance(
        database_url, flairbit_reset, max_keys_per_user=MAX_KEYS, revoked_keys_kept=2
    ) as c:
        yield c


def people() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    return (f"alice.{tag}@example.com", f"bob.{tag}@example.com", f"eve.{tag}@example.com")


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


def fingerprint_of(text: str) -> str:
    return keys.fingerprint(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


async def put(
    client: httpx.AsyncClient, flairbit: Any, me: str, key_id: str, text: str, alg: str = "X25519"
) -> httpx.Response:
    return await client.put(
        f"/api/chat/keys/{key_id}",
        json={"algorithm": alg, "publicKey": text},
        headers=auth(flairbit, me),
    )


async def events(pool: asyncpg.Pool) -> list[tuple[str, list[str], dict[str, Any]]]:
    """The key events in the outbox, oldest first: (routing key, CC, body); the rows taken."""
    rows = await pool.fetch(
        "DELETE FROM chat_message_outbox WHERE event_type = 'keys'"
        " RETURNING id, session_id, routing_key, headers, payload"
    )
    found = []
    for row in sorted(rows, key=lambda r: r["id"]):
        assert row["session_id"] is None
        headers = json.loads(row["headers"])
        assert headers[routing.EVENT_HEADER] == "keys"
        msgspec.json.decode(row["payload"], type=KeyChangeEvent)  # the documented shape
        found.append((row["routing_key"], headers["CC"], json.loads(row["payload"])))
    return found


def told(event: tuple[str, list[str], dict[str, Any]]) -> set[str]:
    key, cc, _ = event
    return {key, *cc}


async def test_publish_replace_revoke_and_what_peers_are_told(
    client: httpx.AsyncClient, flairbit_reset: Any, db_pool: asyncpg.Pool
) -> None:
    alice, bob, eve = people()
    assert (await init(client, flairbit_reset, alice, bob)).status_code == 200
    assert (await init(client, flairbit_reset, eve, alice, "freelance")).status_code == 200
    await events(db_pool)
    everyone = {routing.user_key(e) for e in (alice, bob, eve)}

    first = x25519_text()
    added = await put(client, flairbit_reset, alice, "phone", first)
    assert added.status_code == 201, added.text
    view = added.json()
    assert view["email"] == alice
    assert (view["keyId"], view["algorithm"], view["publicKey"]) == ("phone", "X25519", first)
    assert view["fingerprint"] == fingerprint_of(first)
    [event] = await events(db_pool)
    assert told(event) == everyone  # her peers in both intents and her own other devices
    assert event[2] == {
        "email": alice,
        "keyId": "phone",
        "algorithm": "X25519",
        "change": "added",
        "fingerprint": view["fingerprint"],
        "version": view["version"],
        "changedAt": event[2]["changedAt"],
    }

    again = await put(client, flairbit_reset, alice, "phone", first)
    assert again.status_code == 200
    assert again.json() == view  # idempotent: no new version, nobody told
    assert await events(db_pool) == []

    second = p256_text()
    replaced = await put(client, flairbit_reset, alice, "phone", second, "ECDH-P256")
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["version"] > view["version"]
    assert replaced.json()["createdAt"] == view["createdAt"]
    [event] = await events(db_pool)
    assert (event[2]["change"], event[2]["algorithm"]) == ("replaced", "ECDH-P256")
    assert event[2]["fingerprint"] == fingerprint_of(second)
    assert event[2]["previousFingerprint"] == fingerprint_of(first)

    own = await client.get("/api/chat/keys", headers=auth(flairbit_reset, alice))
    assert own.status_code == 200
    assert own.json() == {"email": alice, "keys": [replaced.json()]}

    revoked = await client.delete("/api/chat/keys/phone", headers=auth(flairbit_reset, alice))
    assert revoked.status_code == 204
    [event] = await events(db_pool)
    assert (event[2]["change"], event[2]["fingerprint"]) == ("revoked", fingerprint_of(second))
    assert event[2]["version"] > replaced.json()["version"]
    assert told(event) == everyone
    again = await client.delete("/api/chat/keys/phone", headers=auth(flairbit_reset, alice))
    assert again.status_code == 204  # already revoked: nothing changes, nobody told
    assert await events(db_pool) == []
    own = await client.get("/api/chat/keys", headers=auth(flairbit_reset, alice))
    assert own.json()["keys"] == []

    back = await put(client, flairbit_reset, alice, "phone", first)
    assert back.status_code == 201  # a revoked id published again is a new key
    [event] = await events(db_pool)
    assert event[2]["change"] == "added"
    assert event[2]["version"] > replaced.json()["version"]


async def test_session_keys_are_for_participants_only(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    alice, bob, eve = people()
    opened = await init(client, flairbit_reset, alice, bob)
    session = opened.json()["sessionId"]
    phone, laptop, bobs = x25519_text(), p256_text(), x25519_text()
    assert (await put(client, flairbit_reset, alice, "phone", phone)).status_code == 201
    assert (await put(client, flairbit_reset, alice, "laptop", laptop, "ECDH-P256")).is_success
    assert (await put(client, flairbit_reset, bob, "b1", bobs)).status_code == 201
    assert (await put(client, flairbit_reset, eve, "e1", x25519_text())).status_code == 201

    for who in (alice, bob):
        answer = await client.get(f"/api/chat/{session}/keys", headers=auth(flairbit_reset, who))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["sessionId"] == session
        held = {
            p["email"]: [(k["keyId"], k["publicKey"]) for k in p["keys"]]
            for p in body["participants"]
        }
        assert held == {alice: [("phone", phone), ("laptop", laptop)], bob: [("b1", bobs)]}

    stranger = await client.get(f"/api/chat/{session}/keys", headers=auth(flairbit_reset, eve))
    assert stranger.status_code == 403
    assert stranger.json()["code"] == "NOT_PARTICIPANT"
    for unknown in (str(uuid.uuid4()), "not-a-session"):
        answer = await client.get(f"/api/chat/{unknown}/keys", headers=auth(flairbit_reset, alice))
        assert answer.status_code == 404
        assert answer.json()["code"] == "SESSION_NOT_FOUND"
    assert (await client.get(f"/api/chat/{session}/keys")).status_code == 401


async def test_the_device_limit_and_the_revoked_keys_kept(
    client: httpx.AsyncClient, flairbit_reset: Any, db_pool: asyncpg.Pool
) -> None:
    alice, _, _ = people()
    for n in range(MAX_KEYS):
        assert (await put(client, flairbit_reset, alice, f"k{n}", x25519_text())).status_code == 201
    over = await put(client, flairbit_reset, alice, "one-more", x25519_text())
    assert over.status_code == 409
    assert over.json()["code"] == "KEY_LIMIT_REACHED"
    # replacing a current key is not adding one
    assert (await put(client, flairbit_reset, alice, "k0", x25519_text())).status_code == 200
    for n in range(MAX_KEYS):
        gone = await client.delete(f"/api/chat/keys/k{n}", headers=auth(flairbit_reset, alice))
        assert gone.status_code == 204
    assert (await put(client, flairbit_reset, alice, "one-more", x25519_text())).status_code == 201
    kept = await db_pool.fetch(
        "SELECT key_id FROM chat_user_keys WHERE user_email = $1 AND revoked_at IS NOT NULL",
        alice,
    )
    assert sorted(r["key_id"] for r in kept) == ["k1", "k2"]  # the 2 latest revoked
    unknown = await client.delete("/api/chat/keys/k0", headers=auth(flairbit_reset, alice))
    assert unknown.status_code == 404  # pruned: as if never published
    assert unknown.json()["code"] == "KEY_NOT_FOUND"


async def test_concurrent_publishes_never_pass_the_limit(
    client: httpx.AsyncClient, flairbit_reset: Any, db_pool: asyncpg.Pool
) -> None:
    alice, _, _ = people()
    answers = await asyncio.gather(
        *(put(client, flairbit_reset, alice, f"c{n}", x25519_text()) for n in range(8))
    )
    assert sorted(a.status_code for a in answers) == [201] * MAX_KEYS + [409] * (8 - MAX_KEYS)
    versions = sorted(a.json()["version"] for a in answers if a.status_code == 201)
    assert len(set(versions)) == MAX_KEYS
    assert len(await events(db_pool)) == MAX_KEYS  # one event per change that committed


async def test_bad_input_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, flairbit_reset: Any, db_pool: asyncpg.Pool
) -> None:
    alice, _, _ = people()
    headers = auth(flairbit_reset, alice)
    good = {"algorithm": "X25519", "publicKey": x25519_text()}
    cases: list[tuple[str, Any, int, str | None]] = [
        ("bad.id", good, 422, "KEY_ID_INVALID"),
        ("x" * 65, good, 422, "KEY_ID_INVALID"),
        ("k", {**good, "algorithm": "RSA"}, 422, "ALGORITHM_UNSUPPORTED"),
        ("k", {**good, "publicKey": p256_text()}, 422, "PUBLIC_KEY_INVALID"),
        ("k", {**good, "publicKey": "A" * 43}, 422, "PUBLIC_KEY_INVALID"),  # the zero point
        ("k", {**good, "publicKey": "!" * 43}, 422, "PUBLIC_KEY_INVALID"),
        ("k", {**good, "publicKey": "A" * 500}, 422, None),
        ("k", {**good, "email": "bob@example.com"}, 422, None),  # the user is the token's
        ("k", {"algorithm": "X25519"}, 422, None),
        ("k", [], 422, None),
    ]
    for key_id, body, status, code in cases:
        answer = await client.put(f"/api/chat/keys/{key_id}", json=body, headers=headers)
        assert answer.status_code == status, (key_id, body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        if code is not None:
            assert answer.json()["code"] == code, answer.text
    not_json = await client.put(
        "/api/chat/keys/k", content=b"{", headers={**headers, "content-type": "application/json"}
    )
    assert not_json.status_code == 400
    huge = await client.put(
        "/api/chat/keys/k",
        content=b" " * 5000 + msgspec.json.encode(good),
        headers={**headers, "content-type": "application/json"},
    )
    assert huge.status_code == 413
    assert (await client.put("/api/chat/keys/k", json=good)).status_code == 401
    assert (await client.delete("/api/chat/keys/k")).status_code == 401
    assert (await client.get("/api/chat/keys")).status_code == 401
    bad_delete = await client.delete("/api/chat/keys/bad.id", headers=headers)
    assert (bad_delete.status_code, bad_delete.json()["code"]) == (422, "KEY_ID_INVALID")
    assert await db_pool.fetchval("SELECT count(*) FROM chat_user_keys") == 0
    assert await events(db_pool) == []


async def test_a_change_wakes_the_relays(
    client: httpx.AsyncClient, flairbit_reset: Any, database_url: str
) -> None:
    alice, _, _ = people()
    listener = await asyncpg.connect(database_url)
    woken = asyncio.Event()
    try:
        await listener.add_listener("chat_outbox", lambda *_: woken.set())
        assert (await put(client, flairbit_reset, alice, "k", x25519_text())).status_code == 201
        await asyncio.wait_for(woken.wait(), 5)
    finally:
        await listener.close()


async def test_key_changes_are_rate_limited_and_what_changes_nothing_is_free(
    db_pool: asyncpg.Pool, database_url: str, flairbit_reset: Any
) -> None:
    alice, bob, _ = people()
    async with instance(
        database_url, flairbit_reset, key_change_burst=2, key_change_rate_per_second=0.001
    ) as client:
        first = x25519_text()
        assert (await put(client, flairbit_reset, alice, "k1", first)).status_code == 201
        assert (await put(client, flairbit_reset, alice, "k2", x25519_text())).status_code == 201
        limited = await put(client, flairbit_reset, alice, "k3", x25519_text())
        assert limited.status_code == 429
        assert limited.json()["code"] == "KEY_CHANGES_RATE_LIMITED"
        assert int(limited.headers["retry-after"]) >= 1
        gone = await client.delete("/api/chat/keys/k1", headers=auth(flairbit_reset, alice))
        assert gone.status_code == 429
        # changing nothing and being refused take no token
        assert (await put(client, flairbit_reset, alice, "k1", first)).status_code == 200
        bad = await put(client, flairbit_reset, alice, "k1", "A" * 43)
        assert bad.json()["code"] == "PUBLIC_KEY_INVALID"
        missing = await client.delete("/api/chat/keys/nope", headers=auth(flairbit_reset, alice))
        assert missing.json()["code"] == "KEY_NOT_FOUND"
        # per user: Bob is not limited by Alice's changes
        assert (await put(client, flairbit_reset, bob, "k1", x25519_text())).status_code == 201
    rows = await db_pool.fetch(
        "SELECT key_id FROM chat_user_keys WHERE user_email = $1 ORDER BY key_id", alice
    )
    assert [r["key_id"] for r in rows] == ["k1", "k2"]
