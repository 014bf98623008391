"""Erasure of a deleted user against the real PostgreSQL and Redis: FlairBit's
POST /internal/flairbit/user-deleted makes the user's messages tombstones under a random
placeholder, closes their sessions (state in init and membership, a ``closed`` event to the
peer, a ``user-deleted`` event to their connections), removes their keys, outbox rows and Redis
entries; idempotent, zero counts for an unknown user, FlairBit's token only."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from chat_common import routing
from chat_common.presence_store import RedisPresence

from .test_flairbit_internal import service_token
from .test_sessions_api import auth, init


def people() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"alice.{tag}@example.com", f"bob.{tag}@example.com"


async def delete_user(client: httpx.AsyncClient, flairbit: Any, email: str) -> httpx.Response:
    return await client.post(
        "/internal/flairbit/user-deleted",
        json={"email": email},
        headers={"Authorization": f"Bearer {service_token(flairbit)}"},
    )


async def message(
    pool: asyncpg.Pool,
    session: uuid.UUID,
    seq: int,
    sender: dict[str, Any],
    content: str | None,
    encrypted: bytes | None = None,
) -> uuid.UUID:
    message_id = uuid.uuid4()
    await pool.execute(
        """
        INSERT INTO chat_messages (id, session_id, seq, sender_profile_id, sender_email,
                                   sender_display_name, content, client_msg_id, encrypted)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        """,
        message_id,
        session,
        seq,
        uuid.UUID(sender["profileId"]),
        sender["email"],
        sender["displayName"],
        content,
        uuid.uuid4(),
        encrypted,
    )
    await pool.execute("UPDATE chat_sessions SET last_seq = $2 WHERE id = $1", session, seq)
    return message_id


async def test_erasure_of_a_deleted_user(
    client: httpx.AsyncClient,
    flairbit_reset: Any,
    db_pool: asyncpg.Pool,
    redis: Redis,
    prefix: str,
) -> None:
    alice, bob = people()
    opened = await init(client, flairbit_reset, alice, bob)
    assert opened.status_code == 200, opened.text
    assert opened.json()["state"] == "OPEN"
    assert opened.json()["closedReason"] is None
    session = uuid.UUID(opened.json()["sessionId"])
    by_email = {p["email"]: p for p in opened.json()["participants"]}
    first = await message(db_pool, session, 1, by_email[alice], "secret words of alice")
    envelope = {
        "alg": "x25519-hkdf-aes256gcm",
        "senderKeyId": "bob-phone",
        "recipients": [
            {"email": f" {alice.title()}", "keyId": "alice-phone", "wrappedKey": "AAAA"},
            {"email": bob, "keyId": "bob-phone", "wrappedKey": "BBBB"},
        ],
        "ciphertext": "Q0lQSEVS",
    }
    await message(db_pool, session, 2, by_email[bob], None, json.dumps(envelope).encode())
    await db_pool.execute(
        """
        INSERT INTO chat_message_changes (session_id, seq, message_id, kind, sender_email,
                                          client_msg_id, content)
        VALUES ($1, 3, $2, 'edit', $3, $4, 'an edited secret of alice')
        """,
        session,
        first,
        alice,
        uuid.uuid4(),
    )
    await db_pool.execute(
        "INSERT INTO chat_user_keys (user_email, key_id, algorithm, public_key)"
        " VALUES ($1, 'alice-phone', 'X25519', $2)",
        alice,
        bytes(32),
    )
    await db_pool.execute(
        "INSERT INTO chat_message_outbox (session_id, routing_key, event_type, payload)"
        " VALUES (NULL, 'user.x', 'keys', $1)",
        json.dumps({"email": alice}).encode(),
    )
    await db_pool.execute(
        "INSERT INTO chat_message_outbox_dead (id, session_id, exchange, routing_key, event_type,"
        " headers, payload, retry_count, created_at)"
        " VALUES (-7, $1, 'chat.events', 'session.x', 'message', '{}', $2, 9, now())",
        session,
        b"{}",
    )
    store = RedisPresence(redis, 30.0, 5.0, prefix=prefix)
    await store.connect(alice, "edge-1", (routing.user_key(bob),))
    await store.connect(bob, "edge-2", (routing.user_key(alice),))
    await redis.set(f"test:limits:content:{alice}:abc", "1", ex=60)
    peers_before = await client.get("/internal/peers", headers=auth(flairbit_reset, bob))
    assert peers_before.json()["emails"] == [alice]

    answer = await delete_user(client, flairbit_reset, alice.upper())
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["sessionsClosed"] == 1
    assert report["messagesErased"] == 1
    assert report["changesErased"] == 1
    assert report["keysRemoved"] == 1
    assert report["outboxRowsPurged"] == 2
    assert report["cacheEntriesRemoved"] >= 4  # record, leases, the limit, the deadline

    rows = await db_pool.fetch(
        "SELECT * FROM chat_messages WHERE session_id = $1 ORDER BY seq", session
    )
    assert [r["seq"] for r in rows] == [1, 2]
    erased = rows[0]
    assert erased["content"] is None
    assert erased["encrypted"] is None
    assert erased["deleted_at"] is not None
    assert erased["sender_email"].endswith("@erased.invalid")
    assert erased["sender_display_name"] == "Deleted user"
    assert str(erased["sender_profile_id"]) != by_email[alice]["profileId"]
    kept = json.loads(rows[1]["encrypted"])
    assert [r["email"] for r in kept["recipients"]] == [erased["sender_email"], bob]
    assert kept["ciphertext"] == "Q0lQSEVS"
    change = await db_pool.fetchrow(
        "SELECT * FROM chat_message_changes WHERE session_id = $1", session
    )
    assert change is not None
    assert change["content"] is None
    assert change["sender_email"] == erased["sender_email"]
    closed = await db_pool.fetchrow("SELECT * FROM chat_sessions WHERE id = $1", session)
    assert closed is not None
    assert closed["closed_reason"] == "PARTICIPANT_DELETED"
    assert closed["closed_at"] is not None
    assert closed["profile_lo"] < closed["profile_hi"]

    membership = await client.get(
        f"/internal/sessions/{session}/membership", headers=auth(flairbit_reset, bob)
    )
    assert membership.status_code == 200
    assert membership.json()["state"] == "CLOSED"
    assert membership.json()["closedReason"] == "PARTICIPANT_DELETED"
    assert membership.json()["peer"]["email"] == erased["sender_email"]
    assert membership.json()["peer"]["displayName"] == "Deleted user"
    gone = await client.get(
        f"/internal/sessions/{session}/membership", headers=auth(flairbit_reset, alice)
    )
    assert gone.status_code == 403
    peers_after = await client.get("/internal/peers", headers=auth(flairbit_reset, bob))
    assert peers_after.json()["emails"] == []

    events = await db_pool.fetch(
        "SELECT routing_key, event_type, headers, payload FROM chat_message_outbox ORDER BY id"
    )
    kinds = {e["event_type"]: e for e in events}
    assert set(kinds) == {"closed", "user-deleted"}
    closed_event = json.loads(bytes(kinds["closed"]["payload"]))
    assert closed_event["state"] == "CLOSED"
    assert closed_event["reason"] == "PARTICIPANT_DELETED"
    assert json.loads(kinds["closed"]["headers"])["CC"] == [routing.user_key(bob)]
    assert kinds["user-deleted"]["routing_key"] == routing.user_key(alice)
    for event in events:
        assert alice not in bytes(event["payload"]).decode() + event["headers"]
    assert await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox_dead") == 0
    assert await db_pool.fetchval("SELECT count(*) FROM chat_user_keys") == 0

    assert not [k async for k in redis.scan_iter(match=f"*{alice}*")]
    digest = routing.user_key(alice).split(".")[1]
    assert not [k async for k in redis.scan_iter(match=f"*{digest}*")]
    assert await redis.zscore(f"{prefix}deadlines", routing.user_key(alice)) is None
    bob_record = await redis.hget(f"{prefix}{routing.user_key(bob)}", "peers")
    assert routing.user_key(alice).encode() not in (bob_record or b"")

    again = await delete_user(client, flairbit_reset, alice)
    assert again.status_code == 200
    assert again.json() == {
        "sessionsClosed": 0,
        "messagesErased": 0,
        "changesErased": 0,
        "keysRemoved": 0,
        "outboxRowsPurged": 0,
        "cacheEntriesRemoved": 0,
    }
    assert (
        await db_pool.fetchval("SELECT closed_at FROM chat_sessions WHERE id = $1", session)
        == (closed["closed_at"])
    )

    bob_deleted = await delete_user(client, flairbit_reset, bob)
    assert bob_deleted.json()["sessionsClosed"] == 0  # closed already: one reason, no event
    assert bob_deleted.json()["messagesErased"] == 1


async def test_unknown_user_bad_input_and_other_tokens(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    unknown = await delete_user(client, flairbit_reset, f"nobody.{uuid.uuid4().hex}@example.com")
    assert unknown.status_code == 200
    assert set(unknown.json().values()) == {0}
    token = {"Authorization": f"Bearer {service_token(flairbit_reset)}"}
    for body, status in (({}, 422), ({"email": 5}, 422), ({"email": "x"}, 422)):
        refused = await client.post("/internal/flairbit/user-deleted", json=body, headers=token)
        assert refused.status_code == status, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
    broken = await client.post(
        "/internal/flairbit/user-deleted",
        content=b"{not json",
        headers={**token, "content-type": "application/json"},
    )
    assert broken.status_code == 400
    user = await client.post(
        "/internal/flairbit/user-deleted",
        json={"email": "alice@example.com"},
        headers=auth(flairbit_reset, "alice@example.com"),
    )
    assert user.status_code == 401
    anonymous = await client.post(
        "/internal/flairbit/user-deleted", json={"email": "alice@example.com"}
    )
    assert anonymous.status_code == 401


async def test_two_erasures_at_once_close_each_session_once(
    client: httpx.AsyncClient, flairbit_reset: Any, db_pool: asyncpg.Pool
) -> None:
    alice, bob = people()
    opened = await init(client, flairbit_reset, alice, bob)
    session = uuid.UUID(opened.json()["sessionId"])
    answers = await asyncio.gather(*(delete_user(client, flairbit_reset, alice) for _ in range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    assert sorted(a.json()["sessionsClosed"] for a in answers) == [0, 0, 0, 1]
    closed = await db_pool.fetchval(
        "SELECT count(*) FROM chat_message_outbox WHERE event_type = 'closed' AND session_id = $1",
        session,
    )
    assert closed == 1
    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM chat_participants WHERE user_email = $1", alice
        )
        == 0
    )
