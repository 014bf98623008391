"""Open connections per user, capped across edges through Redis (the real one on this
machine): whatever carries the token, a connection past the cap is refused at CONNECT; a seat
comes back when its connection closes, or when its edge stops renewing it (a dead edge); with
Redis unreachable, each edge caps its own connections."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from redis.asyncio import Redis

from chat_common import routing
from chat_testing.stomp import StompClient

from .conftest import free_port

REDIS = "redis://127.0.0.1:6379/0"


def ws_url(edge: Any) -> str:
    return f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws"


async def refused(open_: Any) -> str:
    """The refusal's message (the ERROR frame answering CONNECT)."""
    try:
        client = await open_
    except ConnectionError as exc:
        return str(exc)
    await client.close()
    raise AssertionError("the connection was accepted")


async def test_the_cap_holds_across_edges_whatever_carries_the_token(world: Any) -> None:
    chat = await world.chat()
    one = await world.edge(redis_url=REDIS, max_connections_per_user=2)
    two = await world.edge(redis_url=REDIS, max_connections_per_user=2)
    token = chat.alice_token
    in_url = await world.raw(one, token)
    in_connect = await StompClient.open(ws_url(one), headers=(("passcode", token),))
    header = {"Authorization": f"Bearer {token}"}
    message = await refused(StompClient.open(ws_url(two), handshake_headers=header))
    assert "too many open connections" in message
    bob = await world.raw(two, chat.bob_token)  # another user is not affected
    await in_connect.close()
    async with asyncio.timeout(5):
        while True:  # the close reaches the edge, which gives the seat back
            try:
                again = await StompClient.open(ws_url(two), handshake_headers=header)
                break
            except ConnectionError:
                await asyncio.sleep(0.05)
    await again.close()
    await in_url.close()
    await bob.close()


async def test_a_dead_edges_seats_end_with_their_lease_and_live_ones_are_renewed(
    world: Any,
) -> None:
    chat = await world.chat()
    key = f"chat:ws:seats:{routing.user_key(chat.alice)}"
    redis = Redis.from_url(REDIS)
    try:
        # an edge that died holding two of Alice's seats, their leases not yet over
        seconds, micros = await redis.time()
        now = seconds + micros / 1_000_000
        dead = {f"dead-{n}-{uuid.uuid4().hex}": now + 30 for n in range(2)}
        await redis.zadd(key, dead)
        edge = await world.edge(
            redis_url=REDIS, max_connections_per_user=2, connection_lease_seconds=2.0
        )
        assert "too many open connections" in await refused(
            StompClient.open(ws_url(edge), headers=(("passcode", chat.alice_token),))
        )
        # time passes and nobody renews them: their leases end (on Redis's clock)
        seconds, micros = await redis.time()
        await redis.zadd(key, dict.fromkeys(dead, seconds + micros / 1_000_000 - 1), xx=True)
    finally:
        await redis.aclose()
    first = await world.raw(edge, chat.alice_token)
    second = await world.raw(edge, chat.alice_token)
    await asyncio.sleep(3.0)  # longer than a lease: renewed by the live edge, still held
    other = await world.edge(
        redis_url=REDIS, max_connections_per_user=2, connection_lease_seconds=2.0
    )
    assert "too many open connections" in await refused(  # by the seats in Redis, not a count
        StompClient.open(ws_url(other), headers=(("passcode", chat.alice_token),))
    )
    await first.close()
    await second.close()


async def test_without_redis_each_edge_caps_its_own_connections(world: Any) -> None:
    chat = await world.chat()
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    one = await world.edge(redis_url=nowhere, max_connections_per_user=1)
    two = await world.edge(redis_url=nowhere, max_connections_per_user=1)
    on_one = await world.raw(one, chat.alice_token)
    on_two = await world.raw(two, chat.alice_token)  # degraded: each edge counts alone
    assert "too many open connections" in await refused(
        StompClient.open(ws_url(one), headers=(("passcode", chat.alice_token),))
    )
    await on_one.close()
    await on_two.close()
