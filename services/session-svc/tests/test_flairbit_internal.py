"""FlairBit -> chat internal endpoints: only FlairBit's service JWT opens them."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from redis.asyncio import Redis

from chat_testing.waiting import eventually

from .test_sessions_api import auth, client, init, instance  # noqa: F401 - the client fixture

__all__ = ["client"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_token(flairbit: Any) -> str:
    return str(flairbit.control("POST", "/dev/service-token")["token"])


def forged(flairbit: Any, **claims: Any) -> str:
    """A token signed with the stand-in's real key but with chosen claims."""
    pem = (Path(flairbit.key_dir) / "flairbit_dev_private.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    kid = jwt.get_unverified_header(service_token(flairbit))["kid"]
    now = int(time.time())
    body = {"iss": "flairbit", "aud": "chat-service", "sub": "flairbit", "exp": now + 60, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})  # type: ignore[arg-type]


async def test_match_opens_the_same_session_users_see(
    client: httpx.AsyncClient,
    flairbit_reset: Any,
) -> None:
    matched = await client.post(
        "/internal/flairbit/sessions",
        json={
            "firstEmail": "Bob@example.com",
            "secondEmail": "alice@example.com",
            "intent": "dating",
        },
        headers={"Authorization": f"Bearer {service_token(flairbit_reset)}"},
    )
    assert matched.status_code == 200, matched.text
    mine = await init(client, flairbit_reset, "alice@example.com", "bob@example.com")
    assert mine.json()["sessionId"] == matched.json()["sessionId"]


async def test_profile_change_invalidates_the_cache(
    client: httpx.AsyncClient,
    flairbit_reset: Any,
) -> None:
    first = await init(client, flairbit_reset, "alice@example.com", "bob@example.com")
    assert "Bob" in {p["displayName"] for p in first.json()["participants"]}
    flairbit_reset.control(
        "PUT", "/dev/users/bob@example.com/profile/dating", json={"displayName": "Robert"}
    )
    cached = await init(client, flairbit_reset, "alice@example.com", "bob@example.com")
    assert "Robert" not in {p["displayName"] for p in cached.json()["participants"]}
    told = await client.post(
        "/internal/flairbit/profile-changed",
        json={"email": "bob@example.com"},
        headers={"Authorization": f"Bearer {service_token(flairbit_reset)}"},
    )
    assert told.status_code == 204
    fresh = await init(client, flairbit_reset, "alice@example.com", "bob@example.com")
    assert "Robert" in {p["displayName"] for p in fresh.json()["participants"]}
    assert fresh.json()["sessionId"] == first.json()["sessionId"]


@pytest.mark.parametrize(
    "token_of",
    [
        lambda fb: None,
        lambda fb: fb.token("alice@example.com"),  # a user token
        lambda fb: forged(fb, iss="someone-else"),
        lambda fb: forged(fb, aud="chat"),
        lambda fb: forged(fb, sub="alice@example.com"),
        lambda fb: forged(fb, exp=int(time.time()) - 3600),
    ],
)
async def test_anything_but_flairbits_service_token_is_401(
    client: httpx.AsyncClient,
    flairbit_reset: Any,
    token_of: Any,
) -> None:
    token = token_of(flairbit_reset)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for path, body in (
        ("/internal/flairbit/profile-changed", {"email": "bob@example.com"}),
        (
            "/internal/flairbit/sessions",
            {"firstEmail": "a@example.com", "secondEmail": "b@example.com", "intent": "dating"},
        ),
    ):
        answer = await client.post(path, json=body, headers=headers)
        assert answer.status_code == 401, (path, answer.text)


async def test_a_profile_change_reaches_every_instance_through_redis(
    db_pool: Any, database_url: str, flairbit_reset: Any
) -> None:
    redis = "redis://127.0.0.1:6379/0"
    names = [f"chat-test-{uuid.uuid4().hex[:8]}-{n}" for n in ("one", "two")]
    probe = Redis.from_url(redis)

    async def both_subscribed() -> bool:  # their connections carry the names given below
        listening = {c.get("name") for c in await probe.client_list(_type="pubsub")}
        return listening >= set(names)

    async with (
        instance(database_url, flairbit_reset, redis_url=f"{redis}?client_name={names[0]}") as one,
        instance(database_url, flairbit_reset, redis_url=f"{redis}?client_name={names[1]}") as two,
    ):
        try:  # a profile cached before an instance subscribes is forgotten when it does
            await eventually(both_subscribed, what="both instances listen for changes")
        finally:
            await probe.aclose()
        for c in (one, two):  # both cache Bob's profile
            seen = await init(c, flairbit_reset, "alice@example.com", "bob@example.com")
            assert "Bob" in {p["displayName"] for p in seen.json()["participants"]}
        flairbit_reset.control(
            "PUT", "/dev/users/bob@example.com/profile/dating", json={"displayName": "Robert"}
        )
        told = await one.post(  # FlairBit reaches instance one only
            "/internal/flairbit/profile-changed",
            json={"email": "bob@example.com"},
            headers={"Authorization": f"Bearer {service_token(flairbit_reset)}"},
        )
        assert told.status_code == 204

        async def fresh_on_two() -> bool:
            fresh = await init(two, flairbit_reset, "alice@example.com", "bob@example.com")
            return "Robert" in {p["displayName"] for p in fresh.json()["participants"]}

        await eventually(fresh_on_two, poll=0.05, what="instance two forgot Bob's profile")


async def test_a_change_that_cannot_reach_the_others_is_503_for_flairbit_to_retry(
    db_pool: Any, database_url: str, flairbit_reset: Any
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    async with instance(database_url, flairbit_reset, redis_url=nowhere) as one:
        told = await one.post(
            "/internal/flairbit/profile-changed",
            json={"email": "bob@example.com"},
            headers={"Authorization": f"Bearer {service_token(flairbit_reset)}"},
        )
        assert told.status_code == 503
        assert told.json()["code"] == "DEPENDENCY_UNAVAILABLE"
