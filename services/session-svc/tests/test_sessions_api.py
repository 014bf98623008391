"""session-svc over HTTP against the real PostgreSQL and the FlairBit stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from session_svc.app import create_app
from session_svc.settings import Settings


@contextlib.asynccontextmanager
async def instance(
    database_url: str, flairbit: Any, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A session-svc served in-process on the test database, talking to the FlairBit stand-in."""
    settings = Settings(
        database_url=database_url,
        flairbit_url=flairbit.url,
        service_private_key_file=flairbit.service_private_key_file,
        jwt_jwks_url=flairbit.jwks_url,
        jwt_issuer="flairbit",
        jwt_audience="chat",
        **overrides,
    )
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://session-svc") as c:
            yield c


@pytest.fixture
async def client(
    db_pool: asyncpg.Pool, database_url: str, flairbit_reset: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with instance(
        database_url,
        flairbit_reset,
        flairbit_timeout_seconds=5.0,
        breaker_threshold=3,
        breaker_reset_seconds=30,
    ) as c:
        yield c


def auth(flairbit: Any, email: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {flairbit.token(email)}"}


async def init(
    client: httpx.AsyncClient, flairbit: Any, me: str, peer: str, intent: str = "dating"
) -> httpx.Response:
    return await client.post(
        "/api/chat/init", json={"toEmail": peer, "intent": intent}, headers=auth(flairbit, me)
    )


async def test_init_creates_one_session_seen_from_both_sides(
    client: httpx.AsyncClient, flairbit_reset: Any, db_pool: asyncpg.Pool
) -> None:
    first = await init(client, flairbit_reset, "alice@example.com", "Bob@Example.com")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["intent"] == "dating"
    assert {p["email"] for p in body["participants"]} == {"alice@example.com", "bob@example.com"}
    assert {p["displayName"] for p in body["participants"]} == {"Alice", "Bob"}
    ids = [uuid.UUID(p["profileId"]) for p in body["participants"]]
    assert ids == sorted(ids)
    second = await init(client, flairbit_reset, "bob@example.com", "alice@example.com")
    assert second.status_code == 200
    assert second.json()["sessionId"] == body["sessionId"]
    assert await db_pool.fetchval("SELECT count(*) FROM chat_sessions") == 1
    assert await db_pool.fetchval("SELECT count(*) FROM chat_participants") == 2


async def test_another_intent_is_another_session(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    dating = await init(client, flairbit_reset, "alice@example.com", "bob@example.com", "dating")
    work = await init(client, flairbit_reset, "alice@example.com", "bob@example.com", "freelance")
    assert dating.status_code == work.status_code == 200
    assert dating.json()["sessionId"] != work.json()["sessionId"]


async def test_fifty_parallel_inits_of_one_pair_make_one_session(
    client: httpx.AsyncClient, flairbit_reset: Any, db_pool: asyncpg.Pool
) -> None:
    alice = auth(flairbit_reset, "alice@example.com")
    bob = auth(flairbit_reset, "bob@example.com")

    async def one(i: int) -> httpx.Response:
        headers, peer = (alice, "bob@example.com") if i % 2 else (bob, "alice@example.com")
        return await client.post(
            "/api/chat/init", json={"toEmail": peer, "intent": "rideshare"}, headers=headers
        )

    answers = await asyncio.gather(*(one(i) for i in range(50)))
    assert [a.status_code for a in answers] == [200] * 50
    assert len({a.json()["sessionId"] for a in answers}) == 1
    assert await db_pool.fetchval("SELECT count(*) FROM chat_sessions") == 1
    assert await db_pool.fetchval("SELECT count(*) FROM chat_participants") == 2


async def test_profiles_are_cached(client: httpx.AsyncClient, flairbit_reset: Any) -> None:
    await init(client, flairbit_reset, "alice@example.com", "bob@example.com")
    looked_up = flairbit_reset.control("GET", "/dev/stats")["profileLookups"]
    assert looked_up == 2
    await init(client, flairbit_reset, "bob@example.com", "alice@example.com")
    assert flairbit_reset.control("GET", "/dev/stats")["profileLookups"] == looked_up


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"toEmail": "alice@example.com", "intent": "dating"}, 422, "toEmail"),
        ({"toEmail": "not-an-email", "intent": "dating"}, 422, "toEmail"),
        ({"toEmail": "bob@example.com"}, 422, "intent"),
        ({"toEmail": "bob@example.com", "intent": 5}, 422, "intent"),
        ({"toEmail": "bob@example.com", "intent": "Dating!"}, 422, "intent"),
        ({"toEmail": "bob@example.com", "intent": "dating", "extra": 1}, 422, "extra"),
        (
            {"toEmail": "bob@example.com", "intent": "dating", "fromEmail": "eve@example.com"},
            422,
            "fromEmail",
        ),
    ],
)
async def test_bad_bodies_are_refused_and_store_nothing(
    client: httpx.AsyncClient,
    flairbit_reset: Any,
    db_pool: asyncpg.Pool,
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    answer = await client.post(
        "/api/chat/init", json=body, headers=auth(flairbit_reset, "alice@example.com")
    )
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["field"] == field
    assert await db_pool.fetchval("SELECT count(*) FROM chat_sessions") == 0


async def test_from_email_equal_to_the_user_is_accepted(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    answer = await client.post(
        "/api/chat/init",
        json={"toEmail": "bob@example.com", "intent": "dating", "fromEmail": "ALICE@example.com"},
        headers=auth(flairbit_reset, "alice@example.com"),
    )
    assert answer.status_code == 200


async def test_malformed_json_is_400(client: httpx.AsyncClient, flairbit_reset: Any) -> None:
    answer = await client.post(
        "/api/chat/init",
        content=b'{"toEmail": ',
        headers={**auth(flairbit_reset, "alice@example.com"), "content-type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "MALFORMED_BODY"


async def test_a_missing_peer_and_a_missing_profile_are_one_answer(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    """No account at all, or no profile for the intent: the same 404, naming neither the
    address nor the intent (the endpoint must not tell who uses the app for what)."""
    flairbit_reset.control("DELETE", "/dev/users/bob@example.com/profile/dating")
    answers = [
        await init(client, flairbit_reset, "alice@example.com", "nouser.carol@example.com"),
        await init(client, flairbit_reset, "alice@example.com", "bob@example.com"),
    ]
    for answer in answers:
        assert answer.status_code == 404
        problem = answer.json()
        assert problem["code"] == "PEER_NOT_FOUND"
        assert "carol" not in problem["detail"]
        assert "bob" not in problem["detail"]
        assert "dating" not in problem["detail"]
    assert answers[0].json()["detail"] == answers[1].json()["detail"]


async def test_the_callers_own_missing_profile_is_404(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    flairbit_reset.control("DELETE", "/dev/users/alice@example.com/profile/dating")
    answer = await init(client, flairbit_reset, "alice@example.com", "bob@example.com")
    assert answer.status_code == 404
    assert answer.json()["code"] == "PROFILE_NOT_FOUND"


async def test_tokens_are_required_and_checked(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    body = {"toEmail": "bob@example.com", "intent": "dating"}
    missing = await client.post("/api/chat/init", json=body)
    assert missing.status_code == 401
    assert missing.json()["code"] == "TOKEN_MISSING"
    expired = flairbit_reset.token("alice@example.com", ttlSeconds=-3600)
    answer = await client.post(
        "/api/chat/init", json=body, headers={"Authorization": f"Bearer {expired}"}
    )
    assert answer.status_code == 401
    assert answer.json()["code"] == "TOKEN_EXPIRED"


async def test_flairbit_failing_gives_503_then_the_breaker_opens(
    client: httpx.AsyncClient, flairbit_reset: Any
) -> None:
    flairbit_reset.control("POST", "/dev/faults", json={"mode": "fail"})
    for _ in range(3):
        answer = await init(client, flairbit_reset, "alice@example.com", "bob@example.com")
        assert answer.status_code == 503
        assert answer.json()["code"] == "FLAIRBIT_UNAVAILABLE"
    seen = flairbit_reset.control("GET", "/dev/stats")["profileLookups"]
    answer = await init(client, flairbit_reset, "alice@example.com", "bob@example.com")
    assert answer.status_code == 503
    # open breaker: FlairBit is not asked any more
    assert flairbit_reset.control("GET", "/dev/stats")["profileLookups"] == seen


async def test_slow_flairbit_gives_504_in_bounded_time(
    db_pool: asyncpg.Pool, database_url: str, flairbit_reset: Any
) -> None:
    flairbit_reset.control("POST", "/dev/faults", json={"mode": "slow", "delayMs": 3000})
    async with instance(database_url, flairbit_reset, flairbit_timeout_seconds=0.5) as client:
        started = time.monotonic()
        answer = await init(client, flairbit_reset, "alice@example.com", "bob@example.com")
        waited = time.monotonic() - started
    assert answer.status_code == 504
    assert answer.json()["code"] == "FLAIRBIT_TIMEOUT"
    assert waited < 2.5  # bounded: the 0.5 s timeout, not the 3 s answer


async def test_membership(client: httpx.AsyncClient, flairbit_reset: Any) -> None:
    opened = await init(client, flairbit_reset, "alice@example.com", "bob@example.com")
    session_id = opened.json()["sessionId"]
    path = f"/internal/sessions/{session_id}/membership"
    mine = await client.get(path, headers=auth(flairbit_reset, "bob@example.com"))
    assert mine.status_code == 200
    assert mine.json()["me"]["email"] == "bob@example.com"
    assert mine.json()["peer"]["email"] == "alice@example.com"
    other = await client.get(path, headers=auth(flairbit_reset, "eve@example.com"))
    assert other.status_code == 403
    assert other.json()["code"] == "NOT_PARTICIPANT"
    unknown = await client.get(
        f"/internal/sessions/{uuid.uuid4()}/membership",
        headers=auth(flairbit_reset, "bob@example.com"),
    )
    assert unknown.status_code == 404
    garbage = await client.get(
        "/internal/sessions/not-a-uuid/membership", headers=auth(flairbit_reset, "bob@example.com")
    )
    assert garbage.status_code == 404
    anonymous = await client.get(path)
    assert anonymous.status_code == 401
