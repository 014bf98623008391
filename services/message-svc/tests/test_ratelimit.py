"""Send limits in memory (injected clock) and in the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from chat_common.errors import RateLimited
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
        await limiter.acquire("alice", f"fp{i}")
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire("alice", "fp9")
    assert caught.value.code == "SEND_RATE_LIMITED"
    assert 0 < caught.value.retry_after <= 1.0
    # another user is not affected
    await limiter.acquire("bob", "fp0")
    # a refused send gives its token back
    await limiter.release("alice")
    await limiter.acquire("alice", "fp9")


async def flood(limiter: SendLimiter) -> None:
    for _ in range(2):
        await limiter.acquire("carol", "same")
        await limiter.accepted("carol", "same")
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire("carol", "same")
    assert caught.value.code == "DUPLICATE_CONTENT"
    await limiter.acquire("carol", "different")


async def test_memory_limiter() -> None:
    now = [0.0]
    limiter = MemoryLimiter(POLICY, 2, 30, clock=lambda: now[0])
    await exercise(limiter)
    await flood(limiter)
    now[0] = 31.0
    await limiter.acquire("carol", "same")  # the window has passed


async def test_memory_limiter_is_bounded() -> None:
    limiter = MemoryLimiter(POLICY, 2, 30, max_keys=10)
    for i in range(100):
        await limiter.acquire(f"user{i}", "fp")
        await limiter.accepted(f"user{i}", "fp")
    assert len(limiter.buckets) == 10
    assert len(limiter.contents) == 10


async def test_redis_limiter(redis_limiter: RedisLimiter) -> None:
    await exercise(redis_limiter)
    await flood(redis_limiter)


async def test_redis_limiter_is_shared_between_instances(redis_limiter: RedisLimiter) -> None:
    other = RedisLimiter(redis_limiter.redis, POLICY, 2, 30, prefix=redis_limiter.prefix)
    await redis_limiter.acquire("dave", "a")
    await other.acquire("dave", "b")
    await redis_limiter.acquire("dave", "c")
    with pytest.raises(RateLimited):
        await other.acquire("dave", "d")
