"""Send limits per user: a token bucket, and at most N identical contents per window.

Both count only messages that were accepted: a send takes a token first and gives it back when
the message is refused or was a replay. Two implementations share one interface: in-process
(bounded in memory) and Redis (shared by every instance; atomic Lua scripts).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, TypeVar

from chat_common.errors import RateLimited
from redis.asyncio import Redis

from .domain import Bucket, BucketPolicy, refund, take


class SendLimiter(Protocol):
    async def acquire(self, user: str, fingerprint: str) -> None:
        """Take a send token and check the duplicate rule; raise :class:`RateLimited`."""
        ...

    async def release(self, user: str) -> None:
        """Give back the token of a send that was not accepted."""
        ...

    async def accepted(self, user: str, fingerprint: str) -> None:
        """Count an accepted message's content for the duplicate rule."""
        ...


def _too_fast(retry_after: float) -> RateLimited:
    return RateLimited(
        "you are sending messages too fast", retry_after=retry_after, code="SEND_RATE_LIMITED"
    )


def _flood(limit: int, window: float) -> RateLimited:
    return RateLimited(
        f"the same content at most {limit} times per {window:g} s",
        retry_after=window,
        code="DUPLICATE_CONTENT",
    )


K = TypeVar("K")
V = TypeVar("V")


def _remember(store: OrderedDict[K, V], key: K, value: V, max_keys: int) -> None:
    """Store ``value`` as the newest entry, dropping the oldest past ``max_keys``."""
    store[key] = value
    store.move_to_end(key)
    while len(store) > max_keys:
        store.popitem(last=False)


class MemoryLimiter:
    """Per-process limits; the oldest entries are dropped past ``max_keys``."""

    def __init__(
        self,
        policy: BucketPolicy,
        duplicate_limit: int,
        duplicate_window: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._dup_limit = duplicate_limit
        self._dup_window = duplicate_window
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._contents: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()

    def _duplicates(self, user: str, fingerprint: str, now: float) -> int:
        entry = self._contents.get((user, fingerprint))
        if entry is None or now - entry[1] >= self._dup_window:
            return 0
        return entry[0]

    async def acquire(self, user: str, fingerprint: str) -> None:
        now = self._clock()
        if self._duplicates(user, fingerprint, now) >= self._dup_limit:
            raise _flood(self._dup_limit, self._dup_window)
        decision = take(self._buckets.get(user), now, self._policy)
        _remember(self._buckets, user, decision.bucket, self._max_keys)
        if not decision.allowed:
            raise _too_fast(decision.retry_after)

    async def release(self, user: str) -> None:
        bucket = self._buckets.get(user)
        if bucket is not None:
            self._buckets[user] = refund(bucket, self._policy)

    async def accepted(self, user: str, fingerprint: str) -> None:
        now = self._clock()
        key = (user, fingerprint)
        entry = self._contents.get(key)
        if entry is None or now - entry[1] >= self._dup_window:
            entry = (0, now)
        _remember(self._contents, key, (entry[0] + 1, entry[1]), self._max_keys)


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


class RedisLimiter:
    """The same limits, shared by every instance through Redis."""

    def __init__(
        self,
        redis: Redis,
        policy: BucketPolicy,
        duplicate_limit: int,
        duplicate_window: float,
        *,
        prefix: str = "chat:limits:",
    ) -> None:
        self._redis = redis
        self._policy = policy
        self._dup_limit = duplicate_limit
        self._dup_window = duplicate_window
        self._prefix = prefix
        self._take = redis.register_script(_TAKE)
        self._refund = redis.register_script(_REFUND)

    def _bucket_key(self, user: str) -> str:
        return f"{self._prefix}bucket:{user}"

    def _content_key(self, user: str, fingerprint: str) -> str:
        return f"{self._prefix}content:{user}:{fingerprint}"

    async def acquire(self, user: str, fingerprint: str) -> None:
        seen = await self._redis.get(self._content_key(user, fingerprint))
        if seen is not None and int(seen) >= self._dup_limit:
            raise _flood(self._dup_limit, self._dup_window)
        allowed, wait = await self._take(
            keys=[self._bucket_key(user)],
            args=[self._policy.burst, self._policy.rate_per_second],
        )
        if int(allowed) != 1:
            raise _too_fast(float(wait))

    async def release(self, user: str) -> None:
        await self._refund(keys=[self._bucket_key(user)], args=[self._policy.burst])

    async def accepted(self, user: str, fingerprint: str) -> None:
        key = self._content_key(user, fingerprint)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=max(1, int(self._dup_window)), nx=True)
            pipe.incr(key)
            await pipe.execute()
