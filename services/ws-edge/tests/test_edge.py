"""The edge's bookkeeping and fan-out with the in-memory broker: bind on the first local
subscriber, unbind after the last, targets from routing key + CC, one encoding per event,
RECEIPTs from ack events, refusals from error events, two edges behind one exchange."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from chat_stomp.frames import EncodedMessage

from chat_common import routing
from ws_edge.broker import MemoryBroker, MemoryExchange
from ws_edge.disconnect import Disconnect
from ws_edge.edge import Edge
from ws_edge.settings import Settings

S1 = uuid.uuid4()
ALICE, BOB = "alice@example.com", "bob@example.com"


@dataclass
class FakeClient:
    id: str
    email: str | None
    got: list[tuple[str, str, str, EncodedMessage]] = field(default_factory=list)
    receipts: list[str] = field(default_factory=list)
    refusals: list[tuple[str, bytes]] = field(default_factory=list)
    ended: list[Disconnect] = field(default_factory=list)
    topics_ended: list[tuple[str, str, EncodedMessage]] = field(default_factory=list)
    seated: bool = False

    def deliver(
        self, subscription: str, destination: str, message_id: str, encoded: Any, seq: Any
    ) -> None:
        self.got.append((subscription, destination, message_id, encoded))

    def end_topic(
        self, subscription: str, destination: str, message_id: str, encoded: EncodedMessage
    ) -> None:
        self.topics_ended.append((subscription, destination, encoded))

    def receipt(self, receipt_id: str) -> None:
        self.receipts.append(receipt_id)

    def refused(self, receipt_id: str, body: bytes) -> None:
        self.refusals.append((receipt_id, body))

    def disconnect(self, reason: Disconnect) -> None:
        self.ended.append(reason)

    def abort(self) -> None:
        self.ended.append(Disconnect.SHUTDOWN)


def make_edge(exchange: MemoryExchange | None = None, instance: str = "e1") -> Edge:
    broker = MemoryBroker(exchange=exchange)
    edge = Edge(Settings(instance_id=instance), broker, None, None)  # type: ignore[arg-type]
    broker.handler = edge.on_event
    return edge


async def connect(edge: Edge, email: str) -> FakeClient:
    client = FakeClient(edge.new_id(), email)
    edge.opened(client)
    await edge.registered(client, email)
    return client


def message_headers(seq: int, *emails: str) -> dict[str, Any]:
    return {
        "x-event": "message",
        "x-session-id": str(S1),
        "x-seq": seq,
        "CC": [routing.user_key(e) for e in emails],
    }


async def test_keys_are_bound_by_the_first_and_unbound_after_the_last() -> None:
    edge = make_edge()
    broker = edge.broker
    assert isinstance(broker, MemoryBroker)
    phone, laptop = await connect(edge, ALICE), await connect(edge, ALICE)
    assert broker.binds == [routing.user_key(ALICE)]
    await edge.subscribed(phone, "t1", S1)
    await edge.subscribed(laptop, "t1", S1)
    await edge.subscribed(laptop, "t2", S1)
    assert broker.binds.count(routing.session_key(S1)) == 1
    await edge.unsubscribed(laptop, "t1", S1)
    await edge.closed(laptop, Disconnect.CLIENT)
    assert broker.unbinds == []
    await edge.unsubscribed(phone, "t1", S1)
    assert broker.unbinds == [routing.session_key(S1)]
    await edge.closed(phone, Disconnect.CLIENT)
    assert broker.unbinds == [routing.session_key(S1), routing.user_key(ALICE)]
    assert broker.bound == set()
    assert edge.clients == {}


async def test_a_subscriber_waits_for_the_bind_in_flight() -> None:
    edge = make_edge()
    gate = asyncio.Event()
    broker = edge.broker
    assert isinstance(broker, MemoryBroker)
    real_bind = broker.bind

    async def slow_bind(key: str) -> None:
        await gate.wait()
        await real_bind(key)

    broker.bind = slow_bind  # type: ignore[method-assign]
    first = asyncio.create_task(edge.subscribed(FakeClient("a", ALICE), "s", S1))
    second = asyncio.create_task(edge.subscribed(FakeClient("b", BOB), "s", S1))
    await asyncio.sleep(0.01)  # a negative check
    assert not second.done()  # not told "subscribed" before the key is bound
    gate.set()
    await asyncio.gather(first, second)
    assert broker.bound == {routing.session_key(S1)}


async def test_one_event_reaches_topic_and_user_queues_encoded_once() -> None:
    edge = make_edge()
    alice_phone, alice_laptop = await connect(edge, ALICE), await connect(edge, ALICE)
    bob = await connect(edge, BOB)
    edge.hub.add_queue(alice_phone.id, "m", "/user/queue/messages")
    edge.hub.add_queue(alice_laptop.id, "m", "/user/queue/messages")
    edge.hub.add_queue(alice_laptop.id, "a", "/user/queue/ack")
    await edge.subscribed(bob, "t", S1)
    await edge.broker.publish_event(routing.session_key(S1), b"{}", message_headers(1, ALICE, BOB))
    assert [g[:3] for g in alice_phone.got] == [("m", "/user/queue/messages", f"{S1}:1")]
    assert [g[:3] for g in alice_laptop.got] == [("m", "/user/queue/messages", f"{S1}:1")]
    assert [g[:3] for g in bob.got] == [("t", f"/topic/session.{S1}", f"{S1}:1")]
    assert alice_phone.got[0][3] is bob.got[0][3]  # one encoding for every subscriber


async def test_ack_events_answer_the_sending_connection_only() -> None:
    edge = make_edge()
    phone, laptop = await connect(edge, ALICE), await connect(edge, ALICE)
    edge.hub.add_queue(laptop.id, "a", "/user/queue/ack")
    headers = {"x-event": "ack", "x-seq": 2, "x-receipt": "r-9", "x-connection": phone.id}
    await edge.broker.publish_event(routing.user_key(ALICE), b"{}", headers)
    assert phone.receipts == ["r-9"]
    assert laptop.receipts == []
    assert [g[1] for g in laptop.got] == ["/user/queue/ack"]  # every device sees the ack
    error = {"x-event": "error", "x-receipt": "r-10", "x-connection": phone.id}
    edge.hub.add_queue(phone.id, "e", "/user/queue/error")
    await edge.broker.publish_event(routing.user_key(ALICE), b"{}", error)
    assert phone.receipts == ["r-9"]  # a refused message gets no RECEIPT
    assert b"receipt-id:r-10" in phone.got[-1][3].tail
    assert phone.refusals == [("r-10", b"{}")]  # the connection answers it (ERROR if need be)
    assert laptop.refusals == []
    await edge.broker.publish_event(routing.user_key(ALICE), b"{}", {"x-event": "error"})
    assert phone.refusals == [("r-10", b"{}")]  # no receipt asked: nothing to answer


async def test_an_event_published_once_reaches_both_edges() -> None:
    exchange = MemoryExchange()
    one, two = make_edge(exchange, "e1"), make_edge(exchange, "e2")
    on_one, on_two = await connect(one, BOB), await connect(two, BOB)
    await one.subscribed(on_one, "t", S1)
    await two.subscribed(on_two, "t", S1)
    await one.broker.publish_event(routing.session_key(S1), b"{}", message_headers(5, BOB))
    assert len(on_one.got) == 1
    assert len(on_two.got) == 1


async def test_bad_events_are_dropped_and_losing_the_broker_closes_everyone() -> None:
    edge = make_edge()
    client = await connect(edge, BOB)
    await edge.subscribed(client, "t", S1)
    edge.on_event(routing.session_key(S1), {"x-event": "message", "x-seq": "x"}, b"{}")
    assert client.got == []
    edge.broker_lost()
    assert client.ended == [Disconnect.BROKER_LOST]


@dataclass
class ForgetfulUpstream:
    forgotten: list[uuid.UUID] = field(default_factory=list)

    def forget_session(self, session: uuid.UUID) -> None:
        self.forgotten.append(session)


def block_headers(kind: str, *emails: str) -> dict[str, Any]:
    return {
        "x-event": kind,
        "x-session-id": str(S1),
        "CC": [routing.user_key(e) for e in emails],
    }


async def test_a_block_ends_the_topic_subscriptions_and_reaches_the_user_queues() -> None:
    edge = make_edge()
    upstream = ForgetfulUpstream()
    edge.upstream = upstream  # type: ignore[assignment]
    alice, bob = await connect(edge, ALICE), await connect(edge, BOB)
    await edge.subscribed(alice, "a-topic", S1)
    await edge.subscribed(bob, "b-topic", S1)
    edge.hub.add_queue(bob.id, "b-messages", "/user/queue/messages")
    body = b'{"sessionId":"%s","change":"block"}' % str(S1).encode()
    edge.on_event(routing.session_key(S1), block_headers("block", ALICE, BOB), body)
    destination = f"/topic/session.{S1}"
    assert [(s, d) for s, d, _ in alice.topics_ended] == [("a-topic", destination)]
    assert [(s, d) for s, d, _ in bob.topics_ended] == [("b-topic", destination)]
    assert ("x-event", "block") in bob.topics_ended[0][2].headers
    assert [(s, d) for s, d, _, _ in bob.got] == [("b-messages", "/user/queue/messages")]
    assert alice.got == []  # no user queue subscribed: nothing but the topic's last frame
    assert upstream.forgotten == [S1]


async def test_an_unblock_is_delivered_and_forgets_the_cached_membership() -> None:
    edge = make_edge()
    upstream = ForgetfulUpstream()
    edge.upstream = upstream  # type: ignore[assignment]
    bob = await connect(edge, BOB)
    edge.hub.add_queue(bob.id, "b-messages", "/user/queue/messages")
    edge.on_event(routing.session_key(S1), block_headers("unblock", ALICE, BOB), b"{}")
    assert [(s, d) for s, d, _, _ in bob.got] == [("b-messages", "/user/queue/messages")]
    assert bob.topics_ended == []
    assert upstream.forgotten == [S1]


async def test_a_close_ends_the_topic_subscriptions_and_reaches_the_peers_queue() -> None:
    edge = make_edge()
    upstream = ForgetfulUpstream()
    edge.upstream = upstream  # type: ignore[assignment]
    bob = await connect(edge, BOB)
    await edge.subscribed(bob, "b-topic", S1)
    edge.hub.add_queue(bob.id, "b-messages", "/user/queue/messages")
    headers = {"x-event": "closed", "x-session-id": str(S1), "CC": [routing.user_key(BOB)]}
    body = b'{"sessionId":"%s","state":"CLOSED"}' % str(S1).encode()
    edge.on_event(routing.session_key(S1), headers, body)
    assert [(s, d) for s, d, _ in bob.topics_ended] == [("b-topic", f"/topic/session.{S1}")]
    assert ("x-event", "closed") in bob.topics_ended[0][2].headers
    assert [(s, d) for s, d, _, _ in bob.got] == [("b-messages", "/user/queue/messages")]
    assert upstream.forgotten == [S1]
    assert bob.ended == []


async def test_a_deleted_user_s_connections_close_and_nobody_else_s() -> None:
    edge = make_edge()
    phone, laptop, bob = (
        await connect(edge, ALICE),
        await connect(edge, ALICE),
        await connect(edge, BOB),
    )
    edge.hub.add_queue(bob.id, "b-messages", "/user/queue/messages")
    edge.hub.add_queue(phone.id, "a-messages", "/user/queue/messages")
    body = b'{"code":"USER_DELETED","detail":"the account was deleted"}'
    edge.on_event(routing.user_key(ALICE), {"x-event": "user-deleted"}, body)
    assert phone.ended == laptop.ended == [Disconnect.USER_DELETED]
    assert bob.ended == []
    assert phone.got == bob.got == []  # delivered on no destination
    assert Disconnect.USER_DELETED.code == 1008
    assert "USER_DELETED" in Disconnect.USER_DELETED.reason
