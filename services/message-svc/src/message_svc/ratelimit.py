"""Send limits per user: a token bucket, and at most N identical contents per window.

A send reserves both before it is stored: one token, and one use of its content (held by its
client message id) for the duplicate rule. Checking and counting the content is one step, so
concurrent sends of the same content (on any instance) cannot all pass the check, while
retries of one send share its use. A send that stores nothing gives its token back, and its
use of the content unless a message with its client id and content is stored; nothing is left
to do after the commit. Two implementations share one interface: in-process (bounded in memory)
and Redis (shared by every instance; each step one atomic Lua script).
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis

from chat_common.errors import DependencyUnavailable, RateLimited
from chat_common.ratelimit import STORE, BucketPolicy, MemoryBuckets, RedisBuckets, remember
from chat_common.redis_client import faults


class SendLimiter(Protocol):
    """A store that cannot be reached raises :class:`DependencyUnavailable` from any method."""

    async def acquire(self, user: str, fingerprint: str, client_id: str) -> None:
        """Reserve a send token and a use of the content for ``client_id``; raise
        :class:`RateLimited` (and keep nothing) when either is spent. Sends racing with the
        same client id share one use of the content (all but one will be replays)."""
        ...

    async def refund(self, user: str) -> None:
        """Give back the token of a send that stored nothing new."""
        ...

    async def forget(self, user: str, fingerprint: str, client_id: str) -> None:
        """Give back ``client_id``'s use of the content: no message of its was stored."""
        ...


def _too_fast(retry_after: float) -> RateLimited:
    return RateLimited(
        "you are sending messages too fast", retry_after=retry_after, code="SEND_RATE_LIMITED"
    )


def _flood(limit: int, window: float, retry_after: float) -> RateLimited:
    return RateLimited(
        f"the same content at most {limit} times per {window:g} s",
        retry_after=retry_after,
        code="DUPLICATE_CONTENT",
    )


def redis_calls() -> contextlib.AbstractContextManager[None]:
    """Report Redis refusing, resetting or timing out as :class:`RedisUnavailable`."""
    return faults(STORE)


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
        self.buckets = MemoryBuckets(policy, max_keys=max_keys, clock=clock)
        self._dup_limit = duplicate_limit
        self._dup_window = duplicate_window
        self._max_keys = max_keys
        self._clock = clock
        # (user, fingerprint) -> (client ids that used it in the window, when it started)
        self.contents: OrderedDict[tuple[str, str], tuple[frozenset[str], float]] = OrderedDict()

    def _window(self, key: tuple[str, str], now: float) -> tuple[frozenset[str], float]:
        entry = self.contents.get(key)
        if entry is None or now - entry[1] >= self._dup_window:
            return frozenset(), now
        return entry

    async def acquire(self, user: str, fingerprint: str, client_id: str) -> None:
        now = self._clock()
        key = (user, fingerprint)
        uses, started = self._window(key, now)
        if client_id not in uses and len(uses) >= self._dup_limit:
            raise _flood(self._dup_limit, self._dup_window, started + self._dup_window - now)
        allowed, wait = await self.buckets.take(user)
        if not allowed:
            raise _too_fast(wait)
        # No await between this check and the count: one step for this process.
        uses, started = self._window(key, self._clock())
        if client_id not in uses and len(uses) >= self._dup_limit:
            await self.buckets.refund(user)
            raise _flood(self._dup_limit, self._dup_window, started + self._dup_window - now)
        remember(self.contents, key, (uses | {client_id}, started), self._max_keys)

    async def refund(self, user: str) -> None:
        await self.buckets.refund(user)

    async def forget(self, user: str, fingerprint: str, client_id: str) -> None:
        key = (user, fingerprint)
        uses, started = self._window(key, self._clock())
        if client_id in uses:
            self.contents[key] = (uses - {client_id}, started)


# KEYS[1] the set of client ids that used a content; ARGV client id, limit, window in ms.
# Answers {1, 0, added} when the client id holds a use (added: 1 when it took it now), or
# {0, ms left in the window, 0} when the content is spent. The window starts with its first use.
_RESERVE = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return {1, 0, 0} end
local uses = redis.call('SCARD', KEYS[1])
if uses >= tonumber(ARGV[2]) then return {0, redis.call('PTTL', KEYS[1]), 0} end
redis.call('SADD', KEYS[1], ARGV[1])
if uses == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {1, 0, 1}
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
        self.buckets = RedisBuckets(redis, policy, prefix=f"{prefix}bucket:")
        self.redis = redis
        self.prefix = prefix
        self._dup_limit = duplicate_limit
        self._dup_window = duplicate_window
        self._reserve = redis.register_script(_RESERVE)

    def content_key(self, user: str, fingerprint: str) -> str:
        return f"{self.prefix}content:{user}:{fingerprint}"

    async def acquire(self, user: str, fingerprint: str, client_id: str) -> None:
        window_ms = max(1, int(self._dup_window * 1000))
        with redis_calls():
            held, left_ms, added = await self._reserve(
                keys=[self.content_key(user, fingerprint)],
                args=[client_id, self._dup_limit, window_ms],
            )
        if int(held) != 1:
            left = int(left_ms) / 1000 if int(left_ms) > 0 else self._dup_window
            raise _flood(self._dup_limit, self._dup_window, left)
        try:
            allowed, wait = await self.buckets.take(user)
        except BaseException:
            if int(added):
                with contextlib.suppress(DependencyUnavailable):
                    await self.forget(user, fingerprint, client_id)
            raise
        if not allowed:
            if int(added):
                with contextlib.suppress(DependencyUnavailable):  # the refusal stands
                    await self.forget(user, fingerprint, client_id)
            raise _too_fast(wait)

    async def refund(self, user: str) -> None:
        await self.buckets.refund(user)

    async def forget(self, user: str, fingerprint: str, client_id: str) -> None:
        with redis_calls():
            await self.redis.srem(self.content_key(user, fingerprint), client_id)
