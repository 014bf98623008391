"""The edge's small pure pieces: event parsing and encoding, delivered-mark coalescing, the
bounded outbound buffer, the membership cache, disconnect reasons."""

from __future__ import annotations

import uuid

import pytest
from chat_stomp.events import CloseReason

from chat_common import routing
from ws_edge.cache import TtlCache
from ws_edge.disconnect import Disconnect, from_core
from ws_edge.fanout import BadEvent, encode, parse_event, refusal_detail, stored_kind
from ws_edge.marks import DeliveredMarks, message_id, parse_message_id
from ws_edge.outbound import OutboundBuffer

S1, S2 = uuid.uuid4(), uuid.uuid4()
ALICE, BOB = routing.user_key("alice@example.com"), routing.user_key("bob@example.com")


# -- events from the broker ------------------------------------------------------------------


def test_a_message_event_is_read_from_its_key_cc_and_headers() -> None:
    headers = {
        "x-event": b"message",  # AMQP long strings may arrive as bytes
        "x-session-id": str(S1),
        "x-seq": 7,
        "CC": [ALICE.encode(), BOB, routing.session_key(S1)],
    }
    event = parse_event(routing.session_key(S1), headers, b'{"seq":7}')
    assert event.kind == "message"
    assert event.keys == (routing.session_key(S1), ALICE, BOB)  # each key once
    assert (event.session, event.seq) == (str(S1), 7)
    assert event.message_id == f"{S1}:7"


@pytest.mark.parametrize("kind", ["edit", "delete"])
def test_a_change_event_has_its_own_seq_and_message_id(kind: str) -> None:
    headers = {"x-event": kind, "x-session-id": str(S1), "x-seq": 9, "CC": [ALICE, BOB]}
    event = parse_event(routing.session_key(S1), headers, b'{"change":"edit","seq":9}')
    assert (event.kind, event.seq, event.message_id) == (kind, 9, f"{S1}:9")
    assert event.keys == (routing.session_key(S1), ALICE, BOB)


def test_a_stored_event_read_back_says_what_it_is() -> None:
    assert stored_kind(b'{"change":"edit","seq":3,"content":"x"}') == "edit"
    assert stored_kind(b'{"seq":3,"change":"delete"}') == "delete"
    assert stored_kind(b'{"seq":2,"content":"a message"}') == "message"
    assert stored_kind(b'{"seq":2,"change":"bogus"}') == "message"
    assert stored_kind(b"not json") == "message"


def test_an_ack_event_names_its_receipt_and_connection() -> None:
    headers = {"x-event": "ack", "x-seq": "3", "x-receipt": "r-1", "x-connection": "edge-1-4"}
    event = parse_event(ALICE, headers, b"{}")
    assert (event.kind, event.seq, event.receipt, event.connection) == ("ack", 3, "r-1", "edge-1-4")
    assert event.session is None
    assert event.message_id is None


@pytest.mark.parametrize(
    "headers", [{"x-event": "bogus"}, {"x-event": "message", "x-seq": "seven"}]
)
def test_unreadable_events_are_refused(headers: dict[str, object]) -> None:
    with pytest.raises(BadEvent):
        parse_event(ALICE, headers, b"{}")


def test_the_shared_tail_carries_the_event_headers() -> None:
    tail = encode("message", str(S1), 4, b'{"a":1}').tail
    assert tail.startswith(b"content-type:application/json\nx-event:message\n")
    assert f"x-session-id:{S1}\nx-seq:4\ncontent-length:7\n\n".encode() in tail
    assert tail.endswith(b'{"a":1}\x00')
    assert b"receipt-id" not in encode("ack", None, None, b"{}", "r").tail
    assert b"receipt-id:r\n" in encode("error", None, None, b"{}", "r").tail


def test_a_refusal_is_read_for_the_error_frame() -> None:
    body = b'{"code":"NOT_PARTICIPANT","detail":"not a participant of this session"}'
    assert refusal_detail(body) == "not a participant of this session"
    assert refusal_detail(b'{"code":"X"}') == "the message was refused"
    assert refusal_detail(b"not json") == "the message was refused"
    assert refusal_detail(b'{"detail": 3}') == "the message was refused"


# -- delivered marks -------------------------------------------------------------------------


def test_acks_coalesce_to_the_highest_seq_per_session() -> None:
    marks = DeliveredMarks()
    topic = f"/topic/session.{S1}"
    assert marks.note(topic, [message_id(S1, 1), message_id(S1, 3), message_id(S1, 2)])
    assert marks.note("/user/queue/messages", [message_id(S2, 5), "ev-9", "junk"])
    assert marks.take() == {S1: 3, S2: 5}
    assert not marks
    assert not marks.note(topic, [message_id(S1, 2)])  # below what was already sent
    assert marks.note(topic, [message_id(S1, 4)])
    assert marks.take() == {S1: 4}


def test_acks_on_other_queues_do_not_count_as_delivery() -> None:
    marks = DeliveredMarks()
    assert not marks.note("/user/queue/ack", [message_id(S1, 9)])
    assert not marks.note("/user/queue/error", [message_id(S1, 9)])
    assert marks.take() == {}


def test_message_ids_round_trip() -> None:
    assert parse_message_id(message_id(S1, 12)) == (S1, 12)
    assert parse_message_id("ev-1") is None
    assert parse_message_id("not-a-uuid:3") is None
    assert parse_message_id(f"{S1}:-1") is None
    assert parse_message_id(f"{S1}:²") is None  # digits to str.isdigit(), not to int()
    assert parse_message_id(f"{S1}:١٢") is None


# -- outbound buffer -------------------------------------------------------------------------


def test_the_outbound_buffer_refuses_past_its_cap_and_lets_go_of_everything() -> None:
    buffer = OutboundBuffer(10)
    assert buffer.extend([b"abcd", b"efgh"])
    assert buffer.size == 8
    assert len(buffer) == 2
    assert buffer.pop() == b"abcd"
    assert buffer.extend([b"123456"])
    assert not buffer.extend([b"x"])  # 11 bytes > 10
    assert buffer.overflowed
    assert buffer.size == 0
    assert not buffer
    assert not buffer.extend([b"y"])  # refused for good
    assert buffer.pop() is None


# -- membership cache ------------------------------------------------------------------------


def test_cache_entries_expire_and_the_oldest_go_first() -> None:
    cache: TtlCache[str, bool | None] = TtlCache(max_entries=2)
    cache.put("yes", True, ttl=30, now=0)
    cache.put("no", None, ttl=5, now=0)
    hit = cache.get("no", now=4)
    assert hit is not None
    assert hit.value is None
    assert cache.get("no", now=5) is None
    cache.put("a", True, ttl=30, now=1)
    cache.put("b", True, ttl=30, now=1)
    assert len(cache) == 2
    assert cache.get("yes", now=2) is None


# -- disconnect reasons ----------------------------------------------------------------------


def test_disconnect_reasons_have_codes_and_labels() -> None:
    assert Disconnect.SHUTDOWN.code == 1012
    assert Disconnect.SLOW_CONSUMER.code in (1008, 1013)
    assert Disconnect.BROKER_LOST.code == 1013
    assert from_core(CloseReason.REJECTED) is Disconnect.UNAUTHENTICATED
    assert from_core(None) is Disconnect.TRANSPORT_LOST
    assert {d.value for d in Disconnect} >= {"slow_consumer", "shutdown", "token_expired"}
