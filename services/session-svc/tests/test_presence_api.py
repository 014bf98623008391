"""GET /api/chat/presence and GET /internal/peers against the real PostgreSQL and Redis:
peers see each other's presence, strangers are refused, and nothing is told without Redis."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from chat_common import routing
from chat_common.presence_store import RedisPresence

from .test_sessions_api import auth, init, instance


def people() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    return (f"alice.{tag}@example.com", f"bob.{tag}@example.com", f"eve.{tag}@example.com")


async def test_a_peer_sees_presence_and_a_stranger_is_refused(
    client: httpx.AsyncClient, flairbit_reset: Any, prefix: str, redis: Redis
) -> None:
    alice, bob, eve = people()
    assert (await init(client, flairbit_reset, alice, bob)).status_code == 200
    store = RedisPresence(redis, 30.0, 3.0, prefix=prefix, record_seconds=60)
    await store.connect(alice, "edge-1", (routing.user_key(bob),))

    seen = await client.get(
        "/api/chat/presence",
        params={"emails": f"{alice.upper()}, {bob}"},
        headers=auth(flairbit_reset, bob),
    )
    assert seen.status_code == 200, seen.text
    [a, b] = seen.json()["presence"]
    assert (a["email"], a["online"]) == (alice, True)
    assert a["lastSeen"] is not None
    assert (b["email"], b["online"], b["lastSeen"]) == (bob, False, None)  # the caller himself

    for asked in (alice, f"{alice},{eve}"):
        refused = await client.get(
            "/api/chat/presence", params={"emails": asked}, headers=auth(flairbit_reset, eve)
        )
        assert refused.status_code == 403
        assert refused.json()["code"] == "NOT_A_PEER"
    mixed = await client.get(
        "/api/chat/presence", params={"emails": f"{alice},{eve}"}, headers=auth(flairbit_reset, bob)
    )
    assert mixed.status_code == 403  # one stranger among peers refuses the whole request


async def test_bad_requests(client: httpx.AsyncClient, flairbit_reset: Any) -> None:
    alice, _, _ = people()
    headers = auth(flairbit_reset, alice)
    assert (await client.get("/api/chat/presence")).status_code == 401
    for params in ({}, {"emails": ""}, {"emails": "not-an-email"}):
        answer = await client.get("/api/chat/presence", params=params, headers=headers)
        assert answer.status_code in (400, 422), params
    many = ",".join(f"u{i}@example.com" for i in range(101))
    answer = await client.get("/api/chat/presence", params={"emails": many}, headers=headers)
    assert answer.status_code in (400, 422)


async def test_peers_are_who_shares_a_session(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    alice, bob, eve = people()
    await init(client, flairbit_reset, alice, bob)
    await init(client, flairbit_reset, eve, alice)
    answer = await client.get("/internal/peers", headers=auth(flairbit_reset, alice))
    assert answer.status_code == 200
    assert sorted(answer.json()["emails"]) == sorted([bob, eve])
    lonely = await client.get("/internal/peers", headers=auth(flairbit_reset, "x@example.com"))
    assert lonely.json() == {"emails": []}
    assert (await client.get("/internal/peers")).status_code == 401


async def test_without_redis_presence_is_unavailable(
    db_pool: asyncpg.Pool, database_url: str, flairbit_reset: Any
) -> None:
    alice, bob, _ = people()
    async with instance(database_url, flairbit_reset) as client:
        await init(client, flairbit_reset, alice, bob)
        answer = await client.get(
            "/api/chat/presence", params={"emails": alice}, headers=auth(flairbit_reset, bob)
        )
    assert answer.status_code == 503
    assert answer.json()["code"] == "PRESENCE_UNAVAILABLE"
