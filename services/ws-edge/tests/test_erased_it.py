"""A deleted user's tokens at CONNECT (the machine's Redis holding the erasure's denial): a
token issued before the erasure is refused with ERROR ``USER_DELETED`` and leaves nothing on
the edge (no connection, no seat, no binding), also when the erasure lands while the CONNECT is
being registered; a token issued after it connects; without Redis, connections go on."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from chat_stomp.frames import Frame
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from chat_common import routing
from chat_common.erased import ErasedUsers, denial_key
from chat_testing.stomp import StompClient
from chat_testing.waiting import eventually

REDIS = "redis://127.0.0.1:6379/0"


def disconnects(reason: str) -> float:
    """This process's ``chat_ws_disconnects_total`` for ``reason`` (the edge runs in it)."""
    value = REGISTRY.get_sample_value("chat_ws_disconnects_total", {"reason": reason})
    return value or 0.0


def seat(email: str) -> str:
    return f"chat:ws:seats:{routing.user_key(email)}"


async def next_second() -> None:
    """Wait for the next whole second: a token minted then has a later ``iat``."""
    await asyncio.sleep(max(0.0, int(time.time()) + 1.05 - time.time()))


async def connect_frame(port: int, token: str) -> tuple[StompClient, Frame]:
    socket = await connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["v12.stomp"])  # type: ignore[list-item]
    client = StompClient(socket)
    headers = (("accept-version", "1.2"), ("host", "/"), ("passcode", token))
    await client.write(Frame("CONNECT", headers))
    return client, await client.next_frame()


async def test_a_token_issued_before_the_erasure_is_refused_a_later_one_connects(
    world: Any, redis: Redis
) -> None:
    edge = await world.edge(redis_url=REDIS)
    port = edge.edge_server.settings.port
    email = f"gone.{uuid.uuid4().hex[:8]}@example.com"
    old = world.token(email)
    await next_second()
    await ErasedUsers(redis, 60).record(email, time.time())
    deleted, unauthenticated = disconnects("user_deleted"), disconnects("unauthenticated")
    try:
        client, frame = await connect_frame(port, old)
        assert frame.command == "ERROR"
        assert frame.header("message") == "USER_DELETED: the account was deleted"
        async with asyncio.timeout(5):
            await client.socket.wait_closed()
        assert client.socket.close_code == 1008
        await eventually(lambda: edge.edge.clients == {}, what="no client left on the edge")
        # counted as a deleted account's, not as a bad token's
        assert disconnects("user_deleted") == deleted + 1
        assert disconnects("unauthenticated") == unauthenticated
        assert edge.edge.hub.key_count() == 0
        assert not await redis.exists(seat(email))  # refused before taking one

        await next_second()
        fresh = await StompClient.open(
            f"ws://127.0.0.1:{port}/ws?access_token={world.token(email)}"
        )
        try:
            assert [c.email for c in edge.edge.clients.values()] == [email]
        finally:
            await fresh.close()
    finally:
        await redis.delete(denial_key(email))


async def test_an_erasure_while_the_connect_is_registered_refuses_it(
    world: Any, redis: Redis
) -> None:
    """The denial lands after the first look (before the seat) and before the second (once
    the user's key is bound): refused all the same."""
    edge = await world.edge(redis_url=REDIS)
    email = f"racing.{uuid.uuid4().hex[:8]}@example.com"
    token = world.token(email)
    await next_second()
    registered = edge.edge.registered

    async def erased_meanwhile(client: Any, who: str) -> None:
        await registered(client, who)
        await ErasedUsers(redis, 60).record(who, time.time())

    edge.edge.registered = erased_meanwhile
    try:
        client, frame = await connect_frame(edge.edge_server.settings.port, token)
        assert frame.command == "ERROR"
        assert (frame.header("message") or "").startswith("USER_DELETED")
        await client.close()
        await eventually(lambda: edge.edge.clients == {}, what="no client left on the edge")
        await eventually(lambda: edge.edge.hub.key_count() == 0, what="the user key unbound")

        async def seat_given_back() -> bool:
            return not await redis.exists(seat(email))

        await eventually(seat_given_back, what="the seat given back")
    finally:
        await redis.delete(denial_key(email))


def counting_asks(edge: Any) -> list[str]:
    """The emails the edge asks Redis about (each ask, as it happens)."""
    asked: list[str] = []
    erased_at = edge.edge.erased.erased_at

    async def counted(email: str) -> float | None:
        asked.append(email)
        return await erased_at(email)  # type: ignore[no-any-return]

    edge.edge.erased.erased_at = counted
    return asked


async def test_a_connect_asks_twice_when_redis_answers(world: Any) -> None:
    """Before the seat, and again once the user's key is bound (an erasure racing it)."""
    edge = await world.edge(redis_url=REDIS)
    asked = counting_asks(edge)
    email = f"asked.{uuid.uuid4().hex[:8]}@example.com"
    client = await StompClient.open(
        f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws?access_token={world.token(email)}"
    )
    await client.close()
    assert asked == [email, email]


async def test_while_redis_is_down_connections_go_on(world: Any) -> None:
    """Unchecked, and asked once: the second ask would only wait for Redis again."""
    edge = await world.edge(redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=0.2)
    asked = counting_asks(edge)
    email = f"on.{uuid.uuid4().hex[:8]}@example.com"
    client = await StompClient.open(
        f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws?access_token={world.token(email)}"
    )
    await client.close()
    assert asked == [email]
