"""Blocking against the real PostgreSQL and Redis: POST / DELETE /api/chat/{id}/block for
participants only, idempotent, only the blocker unblocks; the state in init and membership;
the block events written to the outbox with the change; blocked pairs are not presence peers
(REST and the peers stored for the edges)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from chat_common import routing
from chat_common.outbox import SESSION_CHANGED_CHANNEL
from chat_common.presence_store import RedisPresence

from .test_sessions_api import auth, init


def people() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    return (f"alice.{tag}@example.com", f"bob.{tag}@example.com", f"eve.{tag}@example.com")


async def opened(client: httpx.AsyncClient, flairbit: Any, me: str, peer: str) -> str:
    answer = await init(client, flairbit, me, peer)
    assert answer.status_code == 200, answer.text
    assert answer.json()["blockedBy"] == []
    return str(answer.json()["sessionId"])


async def block(
    client: httpx.AsyncClient, flairbit: Any, me: str, session: str, *, lift: bool = False
) -> httpx.Response:
    return await client.request(
        "DELETE" if lift else "POST", f"/api/chat/{session}/block", headers=auth(flairbit, me)
    )


async def block_events(pool: asyncpg.Pool, session: str) -> list[tuple[str, str, list[str], Any]]:
    """The session's block events in the outbox, oldest first: (kind, routing key, CC, body)."""
    rows = await pool.fetch(
        "SELECT event_type, routing_key, headers, payload FROM chat_message_outbox"
        " WHERE session_id = $1 AND event_type IN ('block', 'unblock') ORDER BY id",
        uuid.UUID(session),
    )
    return [
        (
            r["event_type"],
            r["routing_key"],
            json.loads(r["headers"])["CC"],
            json.loads(r["payload"]),
        )
        for r in rows
    ]


async def test_block_and_unblock_by_the_blocker(
    client: httpx.AsyncClient, flairbit_reset: Any, db_pool: asyncpg.Pool, database_url: str
) -> None:
    alice, bob, _ = people()
    sid = await opened(client, flairbit_reset, alice, bob)
    notified: list[str] = []
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(SESSION_CHANGED_CHANNEL, lambda *a: notified.append(a[3]))
    try:
        first = await block(client, flairbit_reset, alice, sid)
        assert first.status_code == 200, first.text
        assert first.json() == {"sessionId": sid, "blocked": True, "blockedBy": [alice]}
        again = await block(client, flairbit_reset, alice, sid)  # idempotent: no new event
        assert again.json() == first.json()

        for who in (alice, bob):  # the state is in both sides' init and membership
            view = await init(client, flairbit_reset, who, bob if who == alice else alice)
            assert view.json()["sessionId"] == sid
            assert view.json()["blockedBy"] == [alice]
            member = await client.get(
                f"/internal/sessions/{sid}/membership", headers=auth(flairbit_reset, who)
            )
            assert member.status_code == 200
            assert member.json()["blockedBy"] == [alice]

        refused = await block(client, flairbit_reset, bob, sid, lift=True)
        assert refused.status_code == 403
        assert refused.json()["code"] == "NOT_BLOCKER"

        lifted = await block(client, flairbit_reset, alice, sid, lift=True)
        assert lifted.json() == {"sessionId": sid, "blocked": False, "blockedBy": []}
        idle = await block(client, flairbit_reset, bob, sid, lift=True)  # nothing to lift
        assert idle.status_code == 200
        assert idle.json()["blocked"] is False
        assert notified == [sid, sid]
    finally:
        await listener.close()

    found = await block_events(db_pool, sid)
    keys = sorted(routing.user_key(e) for e in (alice, bob))
    assert [(k, r, sorted(cc)) for k, r, cc, _ in found] == [
        ("block", routing.session_key(sid), keys),
        ("unblock", routing.session_key(sid), keys),
    ]
    blocked, unblocked = found[0][3], found[1][3]
    assert (blocked["change"], blocked["blocked"], blocked["blockedBy"]) == ("block", True, [alice])
    assert blocked["changedBy"] == alice
    assert (unblocked["blocked"], unblocked["blockedBy"], unblocked["changedBy"]) == (
        False,
        [],
        alice,
    )


async def test_both_block_and_each_lifts_their_own(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    alice, bob, _ = people()
    sid = await opened(client, flairbit_reset, alice, bob)
    await block(client, flairbit_reset, alice, sid)
    both = await block(client, flairbit_reset, bob, sid)
    assert both.json()["blockedBy"] == [alice, bob]
    still = await block(client, flairbit_reset, alice, sid, lift=True)
    assert still.json() == {"sessionId": sid, "blocked": True, "blockedBy": [bob]}
    refused = await block(client, flairbit_reset, alice, sid, lift=True)
    assert refused.status_code == 403  # only bob's block is left: only bob lifts it
    assert refused.json()["code"] == "NOT_BLOCKER"
    assert (await block(client, flairbit_reset, bob, sid, lift=True)).json()["blocked"] is False


async def test_only_participants_of_known_sessions(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    alice, bob, eve = people()
    sid = await opened(client, flairbit_reset, alice, bob)
    for lift in (False, True):
        stranger = await block(client, flairbit_reset, eve, sid, lift=lift)
        assert stranger.status_code == 403
        assert stranger.json()["code"] == "NOT_PARTICIPANT"
        unknown = await block(client, flairbit_reset, alice, str(uuid.uuid4()), lift=lift)
        assert unknown.status_code == 404
        assert unknown.json()["code"] == "SESSION_NOT_FOUND"
        bad = await block(client, flairbit_reset, alice, "not-a-uuid", lift=lift)
        assert bad.status_code == 404
    assert (await client.post(f"/api/chat/{sid}/block")).status_code == 401


async def test_a_blocked_pair_is_not_presence_peers(
    client: httpx.AsyncClient, flairbit_reset: Any, prefix: str, redis: Redis
) -> None:
    alice, bob, eve = people()
    sid = await opened(client, flairbit_reset, alice, bob)
    await opened(client, flairbit_reset, alice, eve)
    store = RedisPresence(redis, 30.0, 3.0, prefix=prefix, record_seconds=60)
    bob_key, eve_key, alice_key = (routing.user_key(e) for e in (bob, eve, alice))
    await store.connect(alice, "edge-1", (bob_key, eve_key))
    await store.connect(bob, "edge-2", (alice_key,))

    await block(client, flairbit_reset, bob, sid)
    peers = await client.get("/internal/peers", headers=auth(flairbit_reset, alice))
    assert peers.json()["emails"] == [eve]
    refused = await client.get(
        "/api/chat/presence", params={"emails": bob}, headers=auth(flairbit_reset, alice)
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "NOT_A_PEER"
    # the peers the edges tell of presence changes: dropped at once, both ways
    assert await stored_peers(redis, prefix, alice) == [eve_key]
    assert await stored_peers(redis, prefix, bob) == []

    await block(client, flairbit_reset, bob, sid, lift=True)
    again = await client.get("/internal/peers", headers=auth(flairbit_reset, bob))
    assert again.json()["emails"] == [alice]
    seen = await client.get(
        "/api/chat/presence", params={"emails": bob}, headers=auth(flairbit_reset, alice)
    )
    assert seen.status_code == 200
    assert sorted(await stored_peers(redis, prefix, alice)) == sorted([eve_key, bob_key])
    assert await stored_peers(redis, prefix, bob) == [alice_key]


async def test_another_session_of_the_pair_keeps_them_peers(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    alice, bob, _ = people()
    dating = await opened(client, flairbit_reset, alice, bob)
    other = await init(client, flairbit_reset, alice, bob, intent="freelance")
    assert other.status_code == 200, other.text
    await block(client, flairbit_reset, alice, dating)
    peers = await client.get("/internal/peers", headers=auth(flairbit_reset, bob))
    assert peers.json()["emails"] == [alice]  # the freelance session is not blocked
    assert other.json()["blockedBy"] == []


async def stored_peers(redis: Redis, prefix: str, email: str) -> list[str]:
    raw = await redis.hget(f"{prefix}{routing.user_key(email)}", "peers")
    if raw is None:
        return []
    return (raw.decode() if isinstance(raw, bytes) else raw).split()
