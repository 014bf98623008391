"""Send limits per user: a token bucket, and at most N identical contents per window.

Both count only messages that were accepted: a send takes a token first and gives it back when
the message is refused or was a replay. Two implementations share one interface: in-process
(bounded in memory) and Redis (shared by every instance).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis

from chat_common.errors import RateLimited
from chat_common.ratelimit import BucketPolicy, Buckets, MemoryBuckets, RedisBuckets, remember


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


class _BucketLimiter:
    def __init__(self, buckets: Buckets) -> None:
        self._buckets = buckets

    async def _take(self, user: str) -> None:
        allowed, wait = await self._buckets.take(user)
        if not allowed:
            raise _too_fast(wait)

    async def release(self, user: str) -> None:
        await self._buckets.refund(user)


class MemoryLimiter(_BucketLimiter):
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
        self.buckets = MemoryBuckets(policy, max_keys=max_keys, clock=clock)
        super().__init__(self.buckets)
        self._dup_limit = duplicate_limit
        self._dup_window = duplicate_window
        self._max_keys = max_keys
        self._clock = clock
        self.contents: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()

    def _duplicates(self, user: str, fingerprint: str, now: float) -> int:
        entry = self.contents.get((user, fingerprint))
        if entry is None or now - entry[1] >= self._dup_window:
            return 0
        return entry[0]

    async def acquire(self, user: str, fingerprint: str) -> None:
        if self._duplicates(user, fingerprint, self._clock()) >= self._dup_limit:
            raise _flood(self._dup_limit, self._dup_window)
        await self._take(user)

    async def accepted(self, user: str, fingerprint: str) -> None:
        now = self._clock()
        key = (user, fingerprint)
        entry = self.contents.get(key)
        if entry is None or now - entry[1] >= self._dup_window:
            entry = (0, now)
        remember(self.contents, key, (entry[0] + 1, entry[1]), self._max_keys)


class RedisLimiter(_BucketLimiter):
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
        super().__init__(RedisBuckets(redis, policy, prefix=f"{prefix}bucket:"))
        self.redis = redis
        self.prefix = prefix
        self._dup_limit = duplicate_limit
        self._dup_window = duplicate_window

    def _content_key(self, user: str, fingerprint: str) -> str:
        return f"{self.prefix}content:{user}:{fingerprint}"

    async def acquire(self, user: str, fingerprint: str) -> None:
        seen = await self.redis.get(self._content_key(user, fingerprint))
        if seen is not None and int(seen) >= self._dup_limit:
            raise _flood(self._dup_limit, self._dup_window)
        await self._take(user)

    async def accepted(self, user: str, fingerprint: str) -> None:
        key = self._content_key(user, fingerprint)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=max(1, int(self._dup_window)), nx=True)
            pipe.incr(key)
            await pipe.execute()
