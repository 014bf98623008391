"""Token buckets: the pure rule, and the memory and Redis stores."""

from __future__ import annotations

import math
import socket
import time
import uuid

import pytest
from redis.asyncio import Redis

from chat_common.errors import DependencyUnavailable, RedisUnavailable
from chat_common.ratelimit import BucketPolicy, MemoryBuckets, RedisBuckets, refund, take


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    policy = BucketPolicy(burst=3, rate_per_second=2.0)
    bucket = None
    for _ in range(3):
        decision = take(bucket, 100.0, policy)
        assert decision.allowed
        bucket = decision.bucket
    refused = take(bucket, 100.0, policy)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.5)
    assert take(refused.bucket, 100.5, policy).allowed
    assert not take(take(refused.bucket, 100.5, policy).bucket, 100.5, policy).allowed


def test_refill_is_capped_at_the_burst_and_refund_too() -> None:
    policy = BucketPolicy(burst=2, rate_per_second=1.0)
    decision = take(None, 0.0, policy)
    later = take(decision.bucket, 1000.0, policy)
    assert later.bucket.tokens == 1.0
    assert refund(refund(later.bucket, policy), policy).tokens == 2.0


def test_zero_rate_never_refills() -> None:
    policy = BucketPolicy(burst=1, rate_per_second=0.0)
    first = take(None, 0.0, policy)
    assert first.allowed
    assert math.isinf(take(first.bucket, 10.0, policy).retry_after)


async def test_memory_buckets_are_bounded_and_per_key() -> None:
    now = [0.0]
    buckets = MemoryBuckets(BucketPolicy(1, 1.0), max_keys=5, clock=lambda: now[0])
    assert await buckets.take("a") == (True, 0.0)
    allowed, wait = await buckets.take("a")
    assert not allowed
    assert wait == pytest.approx(1.0)
    assert (await buckets.take("b"))[0]
    await buckets.refund("a")
    assert (await buckets.take("a"))[0]
    for i in range(20):
        await buckets.take(f"k{i}")
    assert len(buckets) == 5


@pytest.mark.integration  # Redis/RabbitMQ of the machine
async def test_redis_buckets_are_shared() -> None:
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"test:{uuid.uuid4().hex}:"
    try:
        one = RedisBuckets(redis, BucketPolicy(2, 0.5), prefix=prefix)
        two = RedisBuckets(redis, BucketPolicy(2, 0.5), prefix=prefix)
        assert (await one.take("u"))[0]
        assert (await two.take("u"))[0]
        allowed, wait = await one.take("u")
        assert not allowed
        assert 0 < wait <= 2.0
        await two.refund("u")
        assert (await one.take("u"))[0]
    finally:
        keys = [k async for k in redis.scan_iter(f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def test_redis_buckets_report_an_unreachable_redis_as_dependency_unavailable() -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        redis = Redis.from_url(
            f"redis://127.0.0.1:{port}/0", socket_timeout=0.5, socket_connect_timeout=0.5
        )
        try:
            buckets = RedisBuckets(redis, BucketPolicy(2, 1.0), prefix="test:down:")
            started = time.monotonic()
            with pytest.raises(DependencyUnavailable) as taking:
                await buckets.take("u")
            with pytest.raises(DependencyUnavailable) as refunding:
                await buckets.refund("u")
            # bounded, with a wide margin: refused at once, not a hang nor a long retry loop
            assert time.monotonic() - started < 2
        finally:
            await redis.aclose()
    assert type(taking.value) is RedisUnavailable  # a DependencyUnavailable
    assert type(refunding.value) is RedisUnavailable
    assert taking.value.code == "DEPENDENCY_UNAVAILABLE"
    assert str(port) not in taking.value.detail


async def test_redis_buckets_report_a_silent_redis_as_dependency_unavailable() -> None:
    """A Redis that accepts connections and never answers: the client's timeout, not a hang."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # the kernel completes the handshake; nothing ever reads or answers
        port = sock.getsockname()[1]
        redis = Redis.from_url(
            f"redis://127.0.0.1:{port}/0", socket_timeout=0.3, socket_connect_timeout=0.3
        )
        try:
            buckets = RedisBuckets(redis, BucketPolicy(2, 1.0), prefix="test:silent:")
            started = time.monotonic()
            with pytest.raises(DependencyUnavailable):
                await buckets.take("u")
            # bounded, with a wide margin: the 0.3 s client timeouts (and retries), not a hang
            assert time.monotonic() - started < 3
        finally:
            await redis.aclose()
