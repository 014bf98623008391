"""Token buckets: the pure rule, and stores that keep buckets per key.

:class:`MemoryBuckets` keeps them in the process (bounded: the least recently used keys are
dropped past ``max_keys``); :class:`RedisBuckets` keeps them in Redis, updated by one atomic Lua
script using Redis's clock, so every instance of a service shares them. When Redis cannot be
reached (refused, reset, timed out), :class:`RedisBuckets` raises
:class:`~chat_common.errors.DependencyUnavailable`; :class:`FallbackBuckets` answers from its
own process's buckets instead (each instance then meters alone: degraded, never unmetered).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from redis.asyncio import Redis

from .errors import RedisUnavailable
from .redis_client import faults


@dataclass(frozen=True, slots=True)
class BucketPolicy:
    burst: int
    rate_per_second: float


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Decision:
    bucket: Bucket
    allowed: bool
    retry_after: float


def take(bucket: Bucket | None, now: float, policy: BucketPolicy, cost: float = 1.0) -> Decision:
    """Refill ``bucket`` up to ``now`` and take ``cost`` tokens if it holds them."""
    if bucket is None:
        tokens = float(policy.burst)
    else:
        elapsed = max(0.0, now - bucket.updated)
        tokens = min(float(policy.burst), bucket.tokens + elapsed * policy.rate_per_second)
    if tokens >= cost:
        return Decision(Bucket(tokens - cost, now), True, 0.0)
    missing = cost - tokens
    wait = math.inf if policy.rate_per_second <= 0 else missing / policy.rate_per_second
    return Decision(Bucket(tokens, now), False, wait)


def refund(bucket: Bucket, policy: BucketPolicy, cost: float = 1.0) -> Bucket:
    return Bucket(min(float(policy.burst), bucket.tokens + cost), bucket.updated)


class Buckets(Protocol):
    async def take(self, key: str) -> tuple[bool, float]:
        """Take one token for ``key``: (allowed, seconds to wait when not)."""
        ...

    async def refund(self, key: str) -> None:
        """Give one token back to ``key``."""
        ...


K = TypeVar("K")
V = TypeVar("V")


def remember(store: OrderedDict[K, V], key: K, value: V, max_keys: int) -> None:
    """Store ``value`` as the newest entry, dropping the oldest past ``max_keys``."""
    store[key] = value
    store.move_to_end(key)
    while len(store) > max_keys:
        store.popitem(last=False)


class MemoryBuckets:
    def __init__(
        self,
        policy: BucketPolicy,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def take(self, key: str) -> tuple[bool, float]:
        decision = take(self._buckets.get(key), self._clock(), self.policy)
        remember(self._buckets, key, decision.bucket, self._max_keys)
        return decision.allowed, decision.retry_after

    async def refund(self, key: str) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._buckets[key] = refund(bucket, self.policy)


_TAKE = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(b[1])
local updated = tonumber(b[2])
if tokens == nil then tokens = burst; updated = now end
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local wait = 0
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, tostring(wait)}
"""

_REFUND = """
local burst = tonumber(ARGV[1])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens ~= nil then
  redis.call('HSET', KEYS[1], 'tokens', tostring(math.min(burst, tokens + 1)))
end
return 0
"""


class RedisBuckets:
    def __init__(self, redis: Redis, policy: BucketPolicy, *, prefix: str) -> None:
        if policy.rate_per_second <= 0:
            raise ValueError("a shared bucket needs a positive rate")
        self.policy = policy
        self._prefix = prefix
        self._take = redis.register_script(_TAKE)
        self._refund = redis.register_script(_REFUND)

    async def take(self, key: str) -> tuple[bool, float]:
        with faults(STORE):
            allowed, wait = await self._take(
                keys=[self._prefix + key], args=[self.policy.burst, self.policy.rate_per_second]
            )
        return int(allowed) == 1, float(wait)

    async def refund(self, key: str) -> None:
        with faults(STORE):
            await self._refund(keys=[self._prefix + key], args=[self.policy.burst])


STORE = "the rate-limit store (Redis)"


class FallbackBuckets:
    """Shared buckets, and this process's own while the shared store cannot be asked: a Redis
    outage degrades a limit to per instance instead of refusing every request."""

    def __init__(self, shared: Buckets, local: Buckets, on_fallback: Callable[[], None]) -> None:
        self._shared = shared
        self._local = local
        self._on_fallback = on_fallback

    async def take(self, key: str) -> tuple[bool, float]:
        try:
            return await self._shared.take(key)
        except RedisUnavailable:
            self._on_fallback()
            return await self._local.take(key)

    async def refund(self, key: str) -> None:
        try:
            await self._shared.refund(key)
        except RedisUnavailable:
            await self._local.refund(key)
