"""Send limits in Redis through the running service: REDIS_URL selects them, and a Redis that
is down answers 503 (before the commit) or is skipped (after it)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
from asgi_lifespan import LifespanManager
from redis.asyncio import Redis

from chat_common.problems import PROBLEM_CONTENT_TYPE
from chat_testing.tcpproxy import TcpProxy
from chat_testing.waiting import eventually
from message_svc.app import create_app
from message_svc.settings import Settings

from .conftest import ChatSession, SessionFactory

REDIS_URL = "redis://127.0.0.1:6379/0"
Headers = Callable[[str], dict[str, str]]


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://message-svc") as c:
            yield c


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def unique_session(new_session: SessionFactory) -> ChatSession:
    tag = uuid.uuid4().hex[:10]
    return await new_session(a=f"a-{tag}@example.com", b=f"b-{tag}@example.com")


def body(session: ChatSession, content: str = "hi") -> dict[str, str]:
    return {
        "sessionId": str(session.id),
        "content": content,
        "clientMessageId": str(uuid.uuid4()),
    }


async def counts(pool: asyncpg.Pool) -> tuple[int, int]:
    messages = await pool.fetchval("SELECT count(*) FROM chat_messages")
    outbox = await pool.fetchval("SELECT count(*) FROM chat_message_outbox")
    return int(messages), int(outbox)


async def user_keys(redis: Redis, user: str) -> list[bytes]:
    return [k async for k in redis.scan_iter(f"chat:limits:*{user}*")]


async def test_redis_url_selects_the_shared_limits(
    settings_factory: Callable[..., Any], new_session: SessionFactory, as_user: Headers
) -> None:
    session = await unique_session(new_session)
    redis = Redis.from_url(REDIS_URL)
    try:
        async with serving(settings_factory()) as client:
            answer = await client.post(
                "/api/chat/message", json=body(session), headers=as_user(session.a)
            )
            assert answer.status_code == 200, answer.text
        assert await user_keys(redis, session.a) == []  # in memory without REDIS_URL
        async with serving(settings_factory(redis_url=REDIS_URL)) as client:
            answer = await client.post(
                "/api/chat/message", json=body(session), headers=as_user(session.a)
            )
            assert answer.status_code == 200, answer.text
            ready = await client.get("/readyz")
            assert ready.status_code == 200
        keys = await user_keys(redis, session.a)
        assert f"chat:limits:bucket:{session.a}".encode() in keys
        await redis.delete(*keys)
    finally:
        await redis.aclose()


async def test_redis_down_answers_503_and_stores_nothing(
    settings_factory: Callable[..., Any],
    new_session: SessionFactory,
    as_user: Headers,
    db_pool: asyncpg.Pool,
) -> None:
    session = await unique_session(new_session)
    settings = settings_factory(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    async with serving(settings) as client:
        answer = await client.post(
            "/api/chat/message", json=body(session), headers=as_user(session.a)
        )
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert answer.json()["code"] == "DEPENDENCY_UNAVAILABLE"
        ready = await client.get("/readyz")  # Redis is down for every instance alike
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        assert "redis" in ready.json()["dependencies"]
    assert await counts(db_pool) == (0, 0)


async def test_redis_cut_after_the_commit_does_not_fail_the_send(
    settings_factory: Callable[..., Any],
    new_session: SessionFactory,
    as_user: Headers,
    db_pool: asyncpg.Pool,
    database_url: str,
) -> None:
    """The send is held on the session's row lock after its limits were reserved; Redis goes
    down meanwhile; the committed message is still answered 200 (nothing after the commit
    needs Redis)."""
    session = await unique_session(new_session)
    async with TcpProxy("127.0.0.1", 6379) as proxy:
        settings = settings_factory(redis_url=f"redis://127.0.0.1:{proxy.port}/0")
        async with serving(settings) as client:
            blocker = await asyncpg.connect(database_url)
            try:
                lock = blocker.transaction()
                await lock.start()
                await blocker.execute(
                    "SELECT 1 FROM chat_sessions WHERE id = $1 FOR UPDATE", session.id
                )
                sending = asyncio.create_task(
                    client.post("/api/chat/message", json=body(session), headers=as_user(session.a))
                )

                async def waiting() -> bool:
                    return bool(
                        await db_pool.fetchval(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                        )
                    )

                await eventually(waiting, poll=0.02, what="the send waits at the insert")
                proxy.cut()
                await lock.commit()
                answer = await asyncio.wait_for(sending, 10)
            finally:
                await blocker.close()
            assert answer.status_code == 200, answer.text
            assert answer.json()["seq"] == 1
    assert await counts(db_pool) == (1, 1)
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = await user_keys(redis, session.a)
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def test_concurrent_identical_sends_pass_the_duplicate_rule_only_up_to_the_limit(
    settings_factory: Callable[..., Any],
    new_session: SessionFactory,
    as_user: Headers,
    db_pool: asyncpg.Pool,
) -> None:
    session = await unique_session(new_session)
    settings = settings_factory(redis_url=REDIS_URL, duplicate_content_limit=2)
    async with serving(settings) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/api/chat/message", json=body(session, "spam"), headers=as_user(session.a)
                )
                for _ in range(12)
            )
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 2 + [429] * 10, [a.text for a in answers]
    assert {a.json()["code"] for a in answers if a.status_code == 429} == {"DUPLICATE_CONTENT"}
    assert await counts(db_pool) == (2, 2)
    redis = Redis.from_url(REDIS_URL)
    try:
        await redis.delete(*await user_keys(redis, session.a))
    finally:
        await redis.aclose()


async def readiness_until(
    client: httpx.AsyncClient, wanted: Callable[[dict[str, Any]], bool]
) -> httpx.Response:
    """Ask /readyz until its body is ``wanted`` (10 s at most)."""
    async with asyncio.timeout(10):
        while True:
            answer = await client.get("/readyz")
            if wanted(answer.json()):
                return answer
            await asyncio.sleep(0.1)


async def test_readiness_sees_rabbitmq_reconnecting_and_stays_ready(
    settings_factory: Callable[..., Any],
) -> None:
    """A robust AMQP connection is not "closed" while it reconnects: readiness asks whether it
    is connected, and reports it as a degraded dependency, not as a reason to leave the
    Service."""
    async with TcpProxy("127.0.0.1", 5672) as proxy:
        amqp_url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/?reconnect_interval=0.2"
        async with serving(settings_factory(amqp_url=amqp_url)) as client:
            ready = await client.get("/readyz")
            assert ready.json() == {"status": "ready"}
            proxy.cut()  # the broker vanishes: the connection drops and cannot come back
            ready = await readiness_until(client, lambda r: "rabbitmq" in r.get("dependencies", {}))
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            proxy.restore()
            await readiness_until(client, lambda r: r == {"status": "ready"})
