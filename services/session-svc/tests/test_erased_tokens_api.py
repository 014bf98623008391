"""A deleted user's tokens after the erasure, against the real PostgreSQL and Redis: every
public route of session-svc refuses a token issued before the erasure (401 USER_DELETED, even
where FlairBit would refuse too), a token issued after it (the address registered again) works,
and while Redis cannot be asked the routes that store something of the caller answer 503 while
the others go on."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from chat_common import routing
from chat_common.erased import DENIAL_PREFIX, ErasedUsers, denial_key
from chat_common.errors import RedisUnavailable
from session_svc.erasure import ErasureService
from session_svc.invalidation import Invalidations

from .test_erasure_api import delete_user, people
from .test_sessions_api import instance

REDIS = "redis://127.0.0.1:6379/0"
KEY = {"algorithm": "X25519", "publicKey": "fZwkMWU5glwYluV_KBl3Rnk85gy-461H2p0HuF-lXio"}


@pytest.fixture
async def client(
    db_pool: asyncpg.Pool, database_url: str, flairbit_reset: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with instance(database_url, flairbit_reset, redis_url=REDIS) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refused(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == code, answer.text


async def test_a_deleted_users_older_tokens_are_refused_and_a_newer_one_works(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    alice, bob = people()
    old = flairbit_reset.token(alice)
    opened = await client.post(
        "/api/chat/init", json={"toEmail": bob, "intent": "dating"}, headers=bearer(old)
    )
    assert opened.status_code == 200, opened.text
    session = opened.json()["sessionId"]
    put = await client.put("/api/chat/keys/phone", json=KEY, headers=bearer(old))
    assert put.status_code == 201, put.text

    flairbit_reset.control("DELETE", f"/dev/users/{alice}")
    erased = await delete_user(client, flairbit_reset, alice)
    assert erased.status_code == 200, erased.text

    calls = [
        ("POST", "/api/chat/init", {"toEmail": bob, "intent": "dating"}),
        ("PUT", "/api/chat/keys/laptop", KEY),
        ("DELETE", "/api/chat/keys/phone", None),
        ("GET", "/api/chat/keys", None),
        ("GET", f"/api/chat/{session}/keys", None),
        ("GET", f"/api/chat/presence?emails={bob}", None),
        ("POST", f"/api/chat/{session}/block", None),
        ("DELETE", f"/api/chat/{session}/block", None),
    ]
    for method, path, body in calls:
        answer = await client.request(method, path, json=body, headers=bearer(old))
        refused(answer, 401, "USER_DELETED")
        assert answer.headers["www-authenticate"].startswith("Bearer")

    # the address registered again at FlairBit: a token issued after the erasure works
    flairbit_reset.control("PUT", f"/dev/users/{alice}/profile/dating", json={"displayName": "A"})
    await asyncio.sleep(max(0.0, int(time.time()) + 1.05 - time.time()))  # iat: a later second
    new = flairbit_reset.token(alice)
    put = await client.put("/api/chat/keys/laptop", json=KEY, headers=bearer(new))
    assert put.status_code == 201, put.text
    again = await client.post(
        "/api/chat/init", json={"toEmail": bob, "intent": "dating"}, headers=bearer(new)
    )
    assert again.status_code == 200, again.text
    assert again.json()["sessionId"] != session  # the erased session never reopens
    refused(await client.get("/api/chat/keys", headers=bearer(old)), 401, "USER_DELETED")


async def test_the_denial_names_no_email_and_lives_as_long_as_a_token(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    alice, _ = people()
    before = time.time()
    erased = await delete_user(client, flairbit_reset, alice)
    assert erased.status_code == 200, erased.text
    redis = Redis.from_url(REDIS)
    try:
        key = denial_key(alice)
        stored = await redis.get(key)
        assert stored is not None
        assert before <= float(stored) <= time.time()
        assert 3600 < await redis.ttl(key) <= 3630  # the lifetime and the 30 s leeway
        keys = [k async for k in redis.scan_iter(match=f"{DENIAL_PREFIX}*")]
        assert key.encode() in keys
        assert not [k for k in keys if alice.encode() in k]
        await redis.delete(key)
    finally:
        await redis.aclose()


async def test_without_redis_storing_routes_answer_503_and_the_others_go_on(
    db_pool: asyncpg.Pool, database_url: str, flairbit_reset: Any
) -> None:
    alice, bob = people()
    token = flairbit_reset.token(alice)
    async with instance(
        database_url, flairbit_reset, redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=0.2
    ) as client:
        put = await client.put(
            f"/api/chat/keys/{uuid.uuid4().hex[:8]}", json=KEY, headers=bearer(token)
        )
        refused(put, 503, "DEPENDENCY_UNAVAILABLE")
        init = await client.post(
            "/api/chat/init", json={"toEmail": bob, "intent": "dating"}, headers=bearer(token)
        )
        refused(init, 503, "DEPENDENCY_UNAVAILABLE")
        own = await client.get("/api/chat/keys", headers=bearer(token))
        assert own.status_code == 200, own.text


async def test_the_openapi_document_names_the_refusal_on_every_user_route(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            unauthorised = operation["responses"]["401"]["description"]
            user_route = path.startswith("/api/chat/")
            assert ("USER_DELETED" in unauthorised) is user_route, (method, path)


class Forgetful:
    """The instances' profile caches (nothing to forget in these tests)."""

    async def changed(self, email: str, intent: str | None) -> None:
        return None


class FlakyDenials(ErasedUsers):
    """Redis failing for the first ``failures`` denials, then answering."""

    def __init__(self, redis: Redis, failures: int) -> None:
        super().__init__(redis, 60)
        self.failures = failures

    async def record(self, email: str, at: float) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise RedisUnavailable("Redis (the erasure's denial) is unavailable: test")
        await super().record(email, at)


async def user_deleted_events(pool: asyncpg.Pool, email: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM chat_message_outbox"
            " WHERE event_type = 'user-deleted' AND routing_key = $1",
            routing.user_key(email),
        )
    )


@pytest.mark.parametrize("failures", [1, 2])
async def test_a_denial_redis_refused_first_is_written_after_the_commit_with_a_second_event(
    db_pool: asyncpg.Pool, failures: int
) -> None:
    alice, _ = people()
    redis = Redis.from_url(REDIS)
    try:
        denials = FlakyDenials(redis, failures)
        erasure = ErasureService(db_pool, cast(Invalidations, Forgetful()), None, erased=denials)
        if failures == 1:  # refused before the transaction, written after it
            await erasure.erase(alice)
            assert await redis.exists(denial_key(alice))
            assert await user_deleted_events(db_pool, alice) == 2
        else:  # refused both times: 503 (FlairBit calls again); the database part is done
            with pytest.raises(RedisUnavailable):
                await erasure.erase(alice)
            assert not await redis.exists(denial_key(alice))
            assert await user_deleted_events(db_pool, alice) == 1
        await redis.delete(denial_key(alice))
    finally:
        await redis.aclose()
