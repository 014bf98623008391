"""How many STOMP connections a user holds open, capped per user across every edge.

A connection takes a seat when its CONNECT is authenticated, whatever carried the token, and
gives it back when it closes. :class:`RedisSeats` keeps the seats of every edge in one Redis
sorted set per user (``chat:ws:seats:user.{hash}``: member the connection id, score when its
lease ends, on Redis's clock); each edge renews the leases of its open connections every
third of the lease, so the seats of an edge that died (``kill -9``, a lost node) are free
again within one lease. :class:`MemorySeats` counts this process's connections only: the
store when no Redis is configured, and the fallback while Redis cannot be reached (each edge
then caps its own connections: degraded, never refusing everyone).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

from redis.asyncio import Redis

from chat_common import routing
from chat_common.errors import RedisUnavailable
from chat_common.redis_client import faults

from .metrics import SEATS_DEGRADED, SEATS_REFUSED

log = logging.getLogger(__name__)


class Seats(Protocol):
    async def take(self, user: str, connection: str) -> bool:
        """A seat for ``connection`` of ``user``; False when the user holds the most."""
        ...

    async def release(self, user: str, connection: str) -> None: ...

    async def renew(self, held: Mapping[str, Iterable[str]]) -> None:
        """Extend the leases of the connections this edge holds, by user."""
        ...


class MemorySeats:
    def __init__(self, per_user: int) -> None:
        self._per_user = per_user
        self._held: dict[str, set[str]] = {}

    async def take(self, user: str, connection: str) -> bool:
        held = self._held.setdefault(user, set())
        if connection in held:
            return True
        if self._per_user and len(held) >= self._per_user:
            SEATS_REFUSED.inc()
            return False
        held.add(connection)
        return True

    async def release(self, user: str, connection: str) -> None:
        held = self._held.get(user)
        if held is not None:
            held.discard(connection)
            if not held:
                del self._held[user]

    async def renew(self, held: Mapping[str, Iterable[str]]) -> None:
        return None


# KEYS[1] the user's set; ARGV: lease (s), most seats, connection id. 1 = seated, 0 = full.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000))
return 1
"""

# KEYS: users' sets; ARGV[1] the lease, then for each key the count of its connection ids
# followed by them. Only seats still held are renewed (XX).
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[1])
local i = 2
for k = 1, #KEYS do
  local n = tonumber(ARGV[i])
  for j = 1, n do
    redis.call('ZADD', KEYS[k], 'XX', now + lease, ARGV[i + j])
  end
  redis.call('PEXPIRE', KEYS[k], math.ceil(lease * 1000))
  i = i + n + 1
end
return 1
"""


class RedisSeats:
    def __init__(
        self,
        redis: Redis,
        per_user: int,
        lease_seconds: float,
        *,
        prefix: str = "chat:ws:seats:",
    ) -> None:
        self._redis = redis
        self._per_user = per_user
        self._lease = lease_seconds
        self._prefix = prefix
        self._local = MemorySeats(per_user)  # this edge's own count, for when Redis is down
        self._take = redis.register_script(_TAKE)
        self._renew = redis.register_script(_RENEW)

    def _key(self, user: str) -> str:
        return f"{self._prefix}{routing.user_key(user)}"

    async def take(self, user: str, connection: str) -> bool:
        if not await self._local.take(user, connection):
            return False  # more than the cap on this edge alone
        if not self._per_user:
            return True
        try:
            with faults():
                seated = await self._take(
                    keys=[self._key(user)], args=[self._lease, self._per_user, connection]
                )
        except RedisUnavailable as exc:
            SEATS_DEGRADED.inc()
            log.warning("seat check without Redis (%s): this edge's own count decides", exc)
            return True
        if not seated:
            await self._local.release(user, connection)
            SEATS_REFUSED.inc()
            return False
        return True

    async def release(self, user: str, connection: str) -> None:
        await self._local.release(user, connection)
        try:
            with faults():
                await self._redis.zrem(self._key(user), connection)
        except RedisUnavailable as exc:
            log.info("seat of %s not given back now (%s); its lease ends it", connection, exc)

    async def renew(self, held: Mapping[str, Iterable[str]]) -> None:
        users = iter(held.items())
        while chunk := list(itertools.islice(users, 200)):  # a bounded script per call
            keys: list[str] = []
            args: list[str | int | float] = [self._lease]
            for user, connections in chunk:
                ids = list(connections)
                if ids:
                    keys.append(self._key(user))
                    args += [len(ids), *ids]
            if not keys:
                continue
            try:
                with faults():
                    await self._renew(keys=keys, args=args)
            except RedisUnavailable as exc:
                log.warning("seat leases not renewed (%s)", exc)
                return
