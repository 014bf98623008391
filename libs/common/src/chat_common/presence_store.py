"""Where presence is kept: :class:`RedisPresence` (shared by every edge and read by
session-svc) and :class:`MemoryPresence` (one edge's own, when no Redis is configured).

Both apply the rules of :mod:`chat_common.presence` (``Book`` is the model the Redis scripts are
tested against, ``tests/test_presence_store_it.py``). In Redis, under a prefix
(``chat:presence:`` by default), on Redis's clock:

- ``{prefix}{user key}``: a hash, ``email``, ``online`` (``1`` when announced online), ``seen``
  (epoch seconds), ``peers`` (the peers' user keys, space separated, never raw emails); it
  expires ``record_seconds`` after its last write (30 days: how long "last seen" is kept);
- ``{prefix}{user key}:c``: a sorted set, connection id -> lease end;
- ``{prefix}deadlines``: a sorted set, user key -> when the user goes offline unless a lease
  is renewed or a connection opens; every edge sweeps it and each expiry is claimed by the one
  script run that removes it, so exactly one edge announces an offline.

Each transition is one Lua script (atomic). The sweep builds key names inside its script, so
all presence keys must live on one Redis (not a Redis Cluster spread over slots).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from redis.asyncio import Redis

from . import routing
from .presence import MAX_PEERS, Book, Change, PresenceView, instant, visible
from .redis_client import faults

RECORD_SECONDS = 30 * 24 * 3600.0


class PresenceStore(Protocol):
    async def connect(
        self, email: str, connection: str, peers: tuple[str, ...] | None
    ) -> Change | None: ...

    async def renew(self, held: Mapping[str, Iterable[str]]) -> list[str]: ...

    async def disconnect(self, email: str, connection: str) -> None: ...

    async def forget(self, email: str) -> None:
        """Remove the user's record, leases and deadline (an erased account)."""

    async def sweep(self) -> list[Change]: ...

    async def read(self, emails: list[str]) -> list[PresenceView]: ...


class MemoryPresence:
    """This process's connections only (no Redis): presence per edge, on ``clock`` (epoch
    seconds; the wall clock unless a test moves its own)."""

    def __init__(self, lease: float, grace: float, clock: Callable[[], float] = time.time) -> None:
        self.book = Book(lease, grace)
        self._clock = clock

    async def connect(
        self, email: str, connection: str, peers: tuple[str, ...] | None
    ) -> Change | None:
        return self.book.connect(email, connection, self._clock(), peers)

    async def renew(self, held: Mapping[str, Iterable[str]]) -> list[str]:
        return self.book.renew({e: list(c) for e, c in held.items()}, self._clock())

    async def disconnect(self, email: str, connection: str) -> None:
        self.book.disconnect(email, connection, self._clock())

    async def forget(self, email: str) -> None:
        self.book.forget(email)

    async def sweep(self) -> list[Change]:
        return self.book.sweep(self._clock())

    async def read(self, emails: list[str]) -> list[PresenceView]:
        now = self._clock()
        return [self.book.read(email, now) for email in emails]


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: record, leases, deadlines. ARGV: connection, lease, grace (unused), record ttl (s),
# email, user key, peers ('-' when unknown). -> {announce 0/1, now, peers}
_CONNECT = (
    _NOW
    + """
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[2], math.ceil(lease * 1000))
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('ZADD', KEYS[3], top[2], ARGV[6])
local was = redis.call('HGET', KEYS[1], 'online')
redis.call('HSET', KEYS[1], 'email', ARGV[5], 'online', '1', 'seen', tostring(now))
if ARGV[7] ~= '-' then redis.call('HSET', KEYS[1], 'peers', ARGV[7]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4]) * 1000))
local peers = redis.call('HGET', KEYS[1], 'peers') or ''
if was == '1' then return {0, tostring(now), peers} end
return {1, tostring(now), peers}
"""
)

# KEYS: deadlines, then a record and its leases per user. ARGV: lease, then per user its
# user key, the count of its connection ids and the ids. -> the user keys none of whose
# connections was still recorded.
_RENEW = (
    _NOW
    + """
local lease = tonumber(ARGV[1])
local lost = {}
local i = 2
for k = 2, #KEYS, 2 do
  local user = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local known = 0
  for j = 1, n do
    known = known + redis.call('ZADD', KEYS[k + 1], 'XX', 'CH', now + lease, ARGV[i + 1 + j])
  end
  if known == 0 then
    table.insert(lost, user)
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 1], '-inf', now)
    redis.call('PEXPIRE', KEYS[k + 1], math.ceil(lease * 1000))
    local top = redis.call('ZRANGE', KEYS[k + 1], -1, -1, 'WITHSCORES')
    redis.call('ZADD', KEYS[1], top[2], user)
    redis.call('HSET', KEYS[k], 'seen', tostring(now))
  end
  i = i + n + 2
end
return lost
"""
)

# KEYS: record, leases, deadlines. ARGV: connection, grace, user key.
_DISCONNECT = (
    _NOW
    + """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'seen', tostring(now))
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top[2] then
  redis.call('ZADD', KEYS[3], top[2], ARGV[3])
elseif redis.call('HGET', KEYS[1], 'online') == '1' then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[3])
end
return 1
"""
)

# KEYS: deadlines. ARGV: prefix, most users per run.
# -> per user claimed: user key, email, seen, peers
_SWEEP = (
    _NOW
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, user in ipairs(due) do
  local record = ARGV[1] .. user
  local leases = record .. ':c'
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  local top = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
  if top[2] then
    redis.call('ZADD', KEYS[1], top[2], user)
  else
    redis.call('ZREM', KEYS[1], user)
    if redis.call('HGET', record, 'online') == '1' then
      redis.call('HSET', record, 'online', '0')
      local r = redis.call('HMGET', record, 'email', 'seen', 'peers')
      table.insert(out, user)
      table.insert(out, r[1] or '')
      table.insert(out, r[2] or tostring(now))
      table.insert(out, r[3] or '')
    end
  end
end
return out
"""
)

# KEYS: deadlines, then the records. ARGV: the user keys. -> now, then per user: email,
# online, seen, deadline ('' when absent)
_READ = (
    _NOW
    + """
local out = {tostring(now)}
for k = 2, #KEYS do
  local r = redis.call('HMGET', KEYS[k], 'email', 'online', 'seen')
  local deadline = redis.call('ZSCORE', KEYS[1], ARGV[k - 1])
  table.insert(out, r[1] or '')
  table.insert(out, r[2] or '')
  table.insert(out, r[3] or '')
  table.insert(out, deadline or '')
end
return out
"""
)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _float(value: object) -> float | None:
    text = _text(value)
    return float(text) if text else None


# KEYS: record. ARGV: a peer's user key, '1' to list it or '0' to drop it. -> 1 when the record
# lists its peers (and now lists or drops this one), 0 when it lists none (the next connect
# stores them).
_PEERING = """
local peers = redis.call('HGET', KEYS[1], 'peers')
if not peers then return 0 end
local kept = {}
for p in string.gmatch(peers, '%S+') do
  if p ~= ARGV[1] then table.insert(kept, p) end
end
if ARGV[2] == '1' then table.insert(kept, ARGV[1]) end
redis.call('HSET', KEYS[1], 'peers', table.concat(kept, ' '))
return 1
"""


def _peers(value: object) -> tuple[str, ...]:
    return tuple(_text(value).split())


class RedisPresence:
    def __init__(
        self,
        redis: Redis,
        lease: float,
        grace: float,
        *,
        prefix: str = "chat:presence:",
        record_seconds: float = RECORD_SECONDS,
        sweep_batch: int = 500,
    ) -> None:
        self._redis = redis
        self._lease = lease
        self._grace = grace
        self._prefix = prefix
        self._record_seconds = record_seconds
        self._sweep_batch = sweep_batch
        self._deadlines = f"{prefix}deadlines"
        self._connect = redis.register_script(_CONNECT)
        self._renew = redis.register_script(_RENEW)
        self._disconnect = redis.register_script(_DISCONNECT)
        self._sweep = redis.register_script(_SWEEP)
        self._read = redis.register_script(_READ)
        self._peering = redis.register_script(_PEERING)

    def _keys(self, email: str) -> tuple[str, str, str]:
        user = routing.user_key(email)
        return user, f"{self._prefix}{user}", f"{self._prefix}{user}:c"

    async def set_peering(self, email: str, peer_email: str, peered: bool) -> None:
        """List ``peer_email`` among the peers stored for ``email`` (told of their changes),
        or drop it (a block). A record that lists no peers is left alone: the user's next
        connection stores them, from session-svc's answer."""
        _, record, _ = self._keys(email)
        with faults():
            await self._peering(
                keys=[record], args=[routing.user_key(peer_email), "1" if peered else "0"]
            )

    async def connect(
        self, email: str, connection: str, peers: tuple[str, ...] | None
    ) -> Change | None:
        user, record, leases = self._keys(email)
        listed = "-" if peers is None else " ".join(peers[:MAX_PEERS])
        with faults():
            announce, now, stored = await self._connect(
                keys=[record, leases, self._deadlines],
                args=[
                    connection,
                    self._lease,
                    self._grace,
                    self._record_seconds,
                    email,
                    user,
                    listed,
                ],
            )
        if not int(announce):
            return None
        return Change(user, email, True, float(_text(now)), _peers(stored))

    async def renew(self, held: Mapping[str, Iterable[str]]) -> list[str]:
        lost: list[str] = []
        emails: dict[str, str] = {}
        users = iter(held.items())
        while chunk := list(itertools.islice(users, 200)):  # a bounded script per call
            keys = [self._deadlines]
            args: list[str | int | float] = [self._lease]
            for email, connections in chunk:
                ids = list(connections)
                if not ids:
                    continue
                user, record, leases = self._keys(email)
                emails[user] = email
                keys += [record, leases]
                args += [user, len(ids), *ids]
            if len(keys) == 1:
                continue
            with faults():
                found = await self._renew(keys=keys, args=args)
            lost += [emails[_text(user)] for user in found]
        return lost

    async def disconnect(self, email: str, connection: str) -> None:
        user, record, leases = self._keys(email)
        with faults():
            await self._disconnect(
                keys=[record, leases, self._deadlines], args=[connection, self._grace, user]
            )

    async def forget(self, email: str) -> None:
        user, record, leases = self._keys(email)
        with faults():
            await self._redis.delete(record, leases)
            await self._redis.zrem(self._deadlines, user)

    async def sweep(self) -> list[Change]:
        with faults():
            found = await self._sweep(
                keys=[self._deadlines], args=[self._prefix, self._sweep_batch]
            )
        changes = []
        for i in range(0, len(found), 4):
            user, email, seen, peers = found[i : i + 4]
            changes.append(
                Change(_text(user), _text(email), False, _float(seen) or 0.0, _peers(peers))
            )
        return changes

    async def read(self, emails: list[str]) -> list[PresenceView]:
        if not emails:
            return []
        users = [self._keys(email) for email in emails]
        with faults():
            found = await self._read(
                keys=[self._deadlines, *(record for _, record, _ in users)],
                args=[user for user, _, _ in users],
            )
        now = float(_text(found[0]))
        views = []
        for i, email in enumerate(emails):
            stored, online, seen, deadline = found[1 + 4 * i : 5 + 4 * i]
            views.append(
                PresenceView(
                    _text(stored) or email,
                    visible(_text(online) == "1", _float(deadline), now),
                    instant(_float(seen)),
                )
            )
        return views
