"""Erased users' denials in the machine's Redis: recorded with their lifetime, checked against
the token's ``iat``, replaced by a later erasure; and what a check does while Redis is down."""

from __future__ import annotations

import time
import uuid

import pytest
from redis.asyncio import Redis

from chat_common.erased import ErasedUsers, UserDeleted, denial_key
from chat_common.errors import RedisUnavailable
from chat_common.jwt_verify import UserIdentity

pytestmark = pytest.mark.integration


def who(email: str, issued_at: float | None) -> UserIdentity:
    return UserIdentity(email=email, expires_at=time.time() + 600, issued_at=issued_at)


async def test_a_token_issued_before_the_erasure_is_refused_and_a_later_one_is_not(
    redis: Redis,
) -> None:
    prefix = f"test:erased:{uuid.uuid4().hex}:"
    users = ErasedUsers(redis, 120, prefix)
    email = f"gone.{uuid.uuid4().hex[:8]}@example.com"
    now = time.time()
    assert await users.check(who(email, now - 60), fail_closed=True)  # nobody erased yet
    assert await users.erased_at(email) is None

    await users.record(email, now)
    assert await users.erased_at(email) == now
    key = denial_key(email, prefix)
    assert 115 <= await redis.ttl(key) <= 120
    assert email not in key
    assert email not in repr(await redis.get(key))
    with pytest.raises(UserDeleted):
        await users.check(who(email, now - 60), fail_closed=False)
    with pytest.raises(UserDeleted):
        await users.check(who(email, None), fail_closed=False)
    assert await users.check(who(email, now + 2), fail_closed=True)  # issued after: accepted
    assert await users.check(who("someone.else@example.com", now - 60), fail_closed=False)

    # a later erasure (the address registered again, then deleted again) moves the line
    await users.record(email, now + 10)
    with pytest.raises(UserDeleted):
        await users.check(who(email, now + 2), fail_closed=True)
    await redis.delete(key)


async def test_while_redis_is_down_a_check_fails_closed_or_lets_through() -> None:
    down = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        users = ErasedUsers(down, 60)
        identity = who("alice@example.com", time.time() - 60)
        assert not await users.check(identity, fail_closed=False)  # let through, unchecked
        with pytest.raises(RedisUnavailable):
            await users.check(identity, fail_closed=True)
        with pytest.raises(RedisUnavailable):
            await users.record("alice@example.com", time.time())
    finally:
        await down.aclose()
