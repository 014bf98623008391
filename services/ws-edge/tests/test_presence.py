"""Presence through two edges sharing one store and one exchange (the in-memory ones): the
first connection pushes "online" to the user's peers on /user/queue/presence, strangers get
nothing, a reconnect within the grace pushes nothing, the last close pushes "offline" once
after the grace, and a dead edge's user goes offline when its leases lapse. The store's clock
is moved by hand, so a slow machine cannot stretch a grace or lapse a lease under a test."""

from __future__ import annotations

import asyncio

import msgspec

from chat_common import routing
from chat_common.presence import Change
from chat_common.presence_store import MemoryPresence
from ws_edge.broker import MemoryBroker, MemoryExchange, forged
from ws_edge.disconnect import Disconnect
from ws_edge.edge import Edge
from ws_edge.presence import CC_CHUNK, EdgePresence, publications
from ws_edge.settings import Settings

from .test_edge import FakeClient

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
QUEUE = "/user/queue/presence"
LEASE, GRACE = 0.3, 0.1


class Peers:
    """session-svc's answer: Alice and Bob share a session; Carol shares none."""

    async def peers(self, token: str) -> tuple[str, ...]:
        others = {ALICE: [BOB], BOB: [ALICE]}.get(token, [])
        return tuple(routing.user_key(e) for e in others)


def make_edge(exchange: MemoryExchange, store: MemoryPresence, instance: str) -> Edge:
    broker = MemoryBroker(exchange=exchange)
    presence = EdgePresence(store, broker, Peers())
    settings = Settings(instance_id=instance)
    edge = Edge(settings, broker, None, None, None, presence)  # type: ignore[arg-type]
    broker.handler = edge.on_event
    return edge


async def connect(edge: Edge, email: str) -> FakeClient:
    """A connection accepted, subscribed to its presence queue (the token is the email here)."""
    client = FakeClient(edge.new_id(), email)
    edge.opened(client)
    await edge.registered(client, email)
    edge.hub.add_queue(client.id, "p", QUEUE)
    edge.accepted(client, email, email)
    await settle()
    return client


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def told(client: FakeClient) -> list[tuple[str, bool, bool]]:
    """(email, online, has last seen) of each presence MESSAGE the client got."""
    seen = []
    for _, destination, _, encoded in client.got:
        assert destination == QUEUE
        assert ("x-event", "presence") in encoded.headers
        tail = encoded.tail_for("1.2")
        body = msgspec.json.decode(tail[tail.index(b"\n\n") + 2 : -1])
        seen.append((body["email"], body["online"], body["lastSeen"] is not None))
    client.got.clear()
    return seen


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def world() -> tuple[Edge, Edge, Clock]:
    exchange, clock = MemoryExchange(), Clock()
    store = MemoryPresence(LEASE, GRACE, clock)
    return make_edge(exchange, store, "e1"), make_edge(exchange, store, "e2"), clock


async def sweep(*edges: Edge) -> None:
    for edge in edges:
        assert edge.presence is not None
        await edge.presence.sweep()


async def test_online_goes_to_peers_on_other_edges_and_never_to_strangers() -> None:
    one, two, _ = world()
    bob, carol = await connect(two, BOB), await connect(two, CAROL)
    told(bob)
    await connect(one, ALICE)
    assert told(bob) == [(ALICE, True, True)]
    assert told(carol) == []
    await connect(two, ALICE)  # a second device on another edge: no change
    assert told(bob) == []


async def test_a_reconnect_within_the_grace_is_silent_and_the_last_close_goes_once() -> None:
    one, two, clock = world()
    bob = await connect(two, BOB)
    alice = await connect(one, ALICE)
    told(bob)
    await one.closed(alice, reason=Disconnect.CLIENT)
    await settle()
    clock.advance(GRACE / 2)
    again = await connect(two, ALICE)  # the phone moved to another edge within the grace
    clock.advance(GRACE * 1.5)
    await sweep(one, two)
    assert told(bob) == []
    await two.closed(again, reason=Disconnect.CLIENT)
    await settle()
    clock.advance(GRACE * 0.9)
    await sweep(one, two)
    assert told(bob) == []  # the grace
    clock.advance(GRACE * 0.2)
    await asyncio.gather(sweep(one), sweep(two))
    assert told(bob) == [(ALICE, False, True)]


async def test_a_dead_edges_users_go_offline_when_their_leases_lapse() -> None:
    one, two, clock = world()
    bob = await connect(two, BOB)
    await connect(one, ALICE)
    told(bob)
    for _ in range(4):  # edge one died: only edge two renews (its own) and sweeps
        clock.advance(LEASE / 3)
        assert two.presence is not None
        await two.presence.renew()
        await sweep(two)
    assert told(bob) == [(ALICE, False, True)]
    assert two.presence is not None
    [view] = await two.presence.store.read([BOB])
    assert view.online  # Bob's leases were renewed


def test_publications_route_by_the_peers_keys_in_chunks() -> None:
    peers = tuple(f"user.{i:032x}" for i in range(CC_CHUNK + 5))
    change = Change(routing.user_key(ALICE), ALICE, True, 1.0, (*peers, peers[0]))
    first, second = publications(change)
    assert first[0] == peers[0]
    assert first[2] == {"x-event": "presence", "CC": list(peers[1:CC_CHUNK])}
    assert second[0] == peers[CC_CHUNK]
    assert msgspec.json.decode(first[1]) == {
        "email": ALICE,
        "online": True,
        "lastSeen": "1970-01-01T00:00:01Z",
    }
    assert publications(Change("u", ALICE, False, 1.0, ())) == []


def test_presence_comes_only_through_chat_presence() -> None:
    assert not forged("chat.presence", "presence")
    assert not forged("chat.presence", b"presence")
    assert forged("chat.presence", "message")
    assert forged("chat.presence", None)
    assert forged("chat.events", "presence")
    assert forged("chat.typing", "presence")
    assert not forged("chat.typing", "typing")
    assert not forged("chat.events", "message")
