"""Send limits in memory (injected clock) and in the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from chat_common.errors import DependencyUnavailable, RateLimited
from chat_common.ratelimit import BucketPolicy
from message_svc.ratelimit import MemoryLimiter, RedisLimiter, SendLimiter

POLICY = BucketPolicy(burst=3, rate_per_second=1.0)


@pytest.fixture
async def redis_limiter() -> AsyncIterator[RedisLimiter]:
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"test:{uuid.uuid4().hex}:"
    try:
        yield RedisLimiter(redis, POLICY, 2, 30, prefix=prefix)
    finally:
        keys = [k async for k in redis.scan_iter(f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def exercise(limiter: SendLimiter) -> None:
    for i in range(3):
        await limiter.acquire("alice", f"fp{i}", f"c{i}")
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire("alice", "fp9", "c9")
    assert caught.value.code == "SEND_RATE_LIMITED"
    assert 0 < caught.value.retry_after <= 1.0
    # another user is not affected
    await limiter.acquire("bob", "fp0", "c0")
    # a send that stored nothing new gives its token back
    await limiter.refund("alice")
    await limiter.acquire("alice", "fp9", "c9")


async def flood(limiter: SendLimiter) -> None:
    await limiter.acquire("carol", "same", "c1")
    await limiter.acquire("carol", "same", "c2")
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire("carol", "same", "c3")
    assert caught.value.code == "DUPLICATE_CONTENT"
    assert 0 < caught.value.retry_after <= 30
    await limiter.acquire("carol", "different", "d1")
    # a retry of a send shares its use of the content
    await limiter.refund("carol")
    await limiter.acquire("carol", "same", "c1")
    # a send that stored nothing gives its use back
    await limiter.forget("carol", "same", "c2")
    await limiter.refund("carol")
    await limiter.acquire("carol", "same", "c3")
    await limiter.refund("carol")
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire("carol", "same", "c4")
    assert caught.value.code == "DUPLICATE_CONTENT"


async def too_fast_keeps_no_content(limiter: SendLimiter) -> None:
    """A send refused by the token bucket does not use up its content."""
    for i in range(3):
        await limiter.acquire("erin", f"fp{i}", f"c{i}")
    for i in range(3):
        with pytest.raises(RateLimited) as caught:
            await limiter.acquire("erin", "again", f"x{i}")
        assert caught.value.code == "SEND_RATE_LIMITED"
    await limiter.refund("erin")
    await limiter.refund("erin")
    await limiter.acquire("erin", "again", "x4")
    await limiter.acquire("erin", "again", "x5")


async def test_memory_limiter() -> None:
    now = [0.0]
    limiter = MemoryLimiter(POLICY, 2, 30, clock=lambda: now[0])
    await exercise(limiter)
    await flood(limiter)
    await too_fast_keeps_no_content(limiter)
    now[0] = 31.0
    await limiter.acquire("carol", "same", "c9")  # the window has passed


async def test_memory_limiter_is_bounded() -> None:
    limiter = MemoryLimiter(POLICY, 2, 30, max_keys=10)
    for i in range(100):
        await limiter.acquire(f"user{i}", "fp", "c")
    assert len(limiter.buckets) == 10
    assert len(limiter.contents) == 10


@pytest.mark.integration  # Redis/RabbitMQ of the machine
async def test_redis_limiter(redis_limiter: RedisLimiter) -> None:
    await exercise(redis_limiter)
    await flood(redis_limiter)
    await too_fast_keeps_no_content(redis_limiter)


@pytest.mark.integration  # Redis/RabbitMQ of the machine
async def test_redis_duplicate_rule_holds_under_concurrency(
    redis_limiter: RedisLimiter,
) -> None:
    """Forty sends of one content at once, through two instances with their own Redis
    clients: exactly the limit of them pass; forty retries of one send all pass on one use."""
    other_redis = Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        roomy = BucketPolicy(burst=1000, rate_per_second=1000.0)
        limiters = [
            RedisLimiter(redis, roomy, 2, 30, prefix=redis_limiter.prefix)
            for redis in (redis_limiter.redis, other_redis)
        ]
        distinct = await asyncio.gather(
            *(limiters[i % 2].acquire("frank", "same", f"c{i}") for i in range(40)),
            return_exceptions=True,
        )
        retries = await asyncio.gather(
            *(limiters[i % 2].acquire("grace", "same", "one") for i in range(40)),
            return_exceptions=True,
        )
    finally:
        await other_redis.aclose()
    passed = [o for o in distinct if o is None]
    refused = [o for o in distinct if isinstance(o, RateLimited)]
    assert len(passed) == 2
    assert len(refused) == 38
    assert {r.code for r in refused} == {"DUPLICATE_CONTENT"}
    key = redis_limiter.content_key("frank", "same")
    assert await redis_limiter.redis.scard(key) == 2
    assert 0 < await redis_limiter.redis.pttl(key) <= 30_000
    assert retries == [None] * 40
    assert await redis_limiter.redis.scard(redis_limiter.content_key("grace", "same")) == 1


@pytest.mark.integration  # Redis/RabbitMQ of the machine
async def test_redis_limiter_is_shared_between_instances(redis_limiter: RedisLimiter) -> None:
    other = RedisLimiter(redis_limiter.redis, POLICY, 2, 30, prefix=redis_limiter.prefix)
    await redis_limiter.acquire("dave", "a", "c1")
    await other.acquire("dave", "b", "c2")
    await redis_limiter.acquire("dave", "c", "c3")
    with pytest.raises(RateLimited):
        await other.acquire("dave", "d", "c4")


async def test_redis_down_is_dependency_unavailable() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    redis = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
    limiter = RedisLimiter(redis, POLICY, 2, 30)
    try:
        with pytest.raises(DependencyUnavailable):
            await limiter.acquire("alice", "fp", "c")
        with pytest.raises(DependencyUnavailable):
            await limiter.refund("alice")
        with pytest.raises(DependencyUnavailable):
            await limiter.forget("alice", "fp", "c")
    finally:
        await redis.aclose()
