"""The Redis presence store against the machine's Redis, run through the same scenarios as the
in-memory store (``Book``, the model): same announcements, same claims, same reads. Redis's
clock is the real one, so its margins (``LEASE``, ``GRACE``) are wide enough for a loaded
machine; the in-memory store's clock is moved by hand."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from chat_common import routing
from chat_common.errors import RedisUnavailable
from chat_common.presence import Change
from chat_common.presence_store import MemoryPresence, PresenceStore, RedisPresence

pytestmark = pytest.mark.integration

LEASE, GRACE = 1.0, 0.5


@dataclass
class Stores:
    """Makes the store under test; ``wait`` lets its clock run on (moves the in-memory store's
    clock, sleeps for Redis's)."""

    redis: Redis | None
    prefix: str = field(default_factory=lambda: f"test:presence:{uuid.uuid4().hex}:")
    now: float = field(default_factory=time.time)

    async def make(self) -> PresenceStore:
        if self.redis is None:
            return MemoryPresence(LEASE, GRACE, lambda: self.now)
        return RedisPresence(self.redis, LEASE, GRACE, prefix=self.prefix, record_seconds=60)

    async def wait(self, seconds: float) -> None:
        if self.redis is None:
            self.now += seconds
        else:
            await asyncio.sleep(seconds)


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest, redis: Redis) -> Stores:
    return Stores(None if request.param == "memory" else redis)


def users(changes: list[Change]) -> list[tuple[str, bool]]:
    return sorted((c.email, c.online) for c in changes)


def emails() -> tuple[str, str, tuple[str, ...]]:
    tag = uuid.uuid4().hex[:8]
    bob = f"bob.{tag}@example.com"
    return f"alice.{tag}@example.com", bob, (routing.user_key(bob),)


async def test_online_once_offline_once_after_the_grace(stores: Stores) -> None:
    store = await stores.make()
    alice, _, peers = emails()
    first = await store.connect(alice, "e1-1", peers)
    assert first is not None
    assert first.online
    assert first.peers == peers
    assert await store.connect(alice, "e2-1", None) is None
    await store.disconnect(alice, "e1-1")
    await store.disconnect(alice, "e2-1")
    assert await store.sweep() == []  # the grace
    [view] = await store.read([alice])
    assert view.online
    assert view.last_seen is not None
    await stores.wait(GRACE + 0.05)
    [change] = await store.sweep()
    assert (change.email, change.online, change.peers) == (alice, False, peers)
    assert await store.sweep() == []
    [view] = await store.read([alice])
    assert not view.online
    assert view.last_seen is not None


async def test_a_reconnect_in_the_grace_announces_nothing(stores: Stores) -> None:
    store = await stores.make()
    alice, _, peers = emails()
    await store.connect(alice, "e1-1", peers)
    await store.disconnect(alice, "e1-1")
    await stores.wait(GRACE / 2)
    assert await store.connect(alice, "e1-2", peers) is None
    await stores.wait(GRACE)
    assert await store.sweep() == []
    assert (await store.read([alice]))[0].online


async def test_unrenewed_leases_lapse_and_renewed_ones_hold(stores: Stores) -> None:
    store = await stores.make()
    alice, bob, peers = emails()
    await store.connect(alice, "dead-1", peers)  # an edge that dies: never renewed
    await store.connect(bob, "live-1", (routing.user_key(alice),))
    for _ in range(4):
        await stores.wait(LEASE / 3)
        assert await store.renew({bob: ["live-1"]}) == []
    [change] = await store.sweep()  # Alice's lease lapsed; Bob's was renewed
    assert (change.email, change.online) == (alice, False)
    views = await store.read([alice, bob, "nobody@example.com"])
    assert [(v.email, v.online) for v in views] == [
        (alice, False),
        (bob, True),
        ("nobody@example.com", False),
    ]
    assert views[2].last_seen is None
    # a renewal of connections nobody remembers (swept while Redis was out of reach)
    assert await store.renew({alice: ["dead-1"]}) == [alice]


async def test_readers_see_offline_before_any_sweep(stores: Stores) -> None:
    store = await stores.make()
    alice, _, peers = emails()
    await store.connect(alice, "dead-1", peers)
    await stores.wait(LEASE + 0.05)
    assert not (await store.read([alice]))[0].online


async def test_only_one_of_many_sweepers_claims_an_offline(redis: Redis) -> None:
    prefix = f"test:presence:{uuid.uuid4().hex}:"
    edges = [RedisPresence(redis, LEASE, GRACE, prefix=prefix, record_seconds=60) for _ in range(4)]
    tag = uuid.uuid4().hex[:8]
    people = [f"u{i}.{tag}@example.com" for i in range(20)]
    for i, person in enumerate(people):
        await edges[i % 4].connect(person, f"c{i}", ())
        await edges[i % 4].disconnect(person, f"c{i}")
    await asyncio.sleep(GRACE + 0.05)
    claimed = await asyncio.gather(*(edge.sweep() for edge in edges))
    assert sorted(c.email for found in claimed for c in found) == sorted(people)


async def test_an_unreachable_redis_is_a_domain_error() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    store = RedisPresence(client, LEASE, GRACE)
    try:
        with pytest.raises(RedisUnavailable):
            await store.connect("a@example.com", "c", None)
    finally:
        await client.aclose()


async def test_a_forgotten_user_leaves_no_record_and_no_offline(stores: Stores) -> None:
    store = await stores.make()
    alice, _, peers = emails()
    await store.connect(alice, "e1-1", peers)
    await store.forget(alice)
    await stores.wait(GRACE + 0.05)
    assert await store.sweep() == []  # nobody is told the erased user went offline
    [view] = await store.read([alice])
    assert not view.online
    assert view.last_seen is None
