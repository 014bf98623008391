"""The SockJS protocol core (pure, no event loop, the clock passed in): routes, frames and their
escaping, the client's payloads, what each transport writes, and a session's state machine
(the open frame first, one frame per poll, the bounded queue, close, BUSY, the goodbye,
heart-beat and expiry times)."""

from __future__ import annotations

import json

import pytest
from chat_stomp.frames import SERVER_COMMANDS, Frame, serialize
from chat_stomp.parser import FrameParser, Limits

from ws_edge import sockjs
from ws_edge.sockjs import (
    Attach,
    BadPayload,
    Greeting,
    Info,
    Session,
    SessionRoute,
    State,
    Transport,
)

PREFIX = "/ws"
DELAY = 5.0


def _json(frame: bytes, kind: bytes) -> object:
    assert frame[:1] == kind, frame
    return json.loads(frame[1:])


# -- routes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws", "/ws/"])
def test_the_prefix_is_the_greeting(path: str) -> None:
    assert sockjs.route(path, PREFIX) == Greeting()


def test_info_is_routed() -> None:
    assert sockjs.route("/ws/info", PREFIX) == Info()


@pytest.mark.parametrize("transport", list(Transport))
def test_every_transport_is_routed_with_its_server_and_session(transport: Transport) -> None:
    found = sockjs.route(f"/ws/000/a-Session_1/{transport.value}", PREFIX)
    assert found == SessionRoute("000", "a-Session_1", transport)


@pytest.mark.parametrize(
    "path",
    [
        "/ws/info/",  # not /info
        "/wsx/info",  # another prefix that merely starts alike
        "/wsinfo",
        "/other/000/abc/xhr",
        "/ws/000/abc/nope",  # an unknown transport
        "/ws/000/abc/XHR",  # transports are lower case
        "/ws/000/abc/jsonp",  # not offered
        "/ws/000/abc/xhr/",
        "/ws/000/abc",  # no transport
        "/ws/000//xhr",  # an empty session id
        "//abc/xhr",
        "/ws//abc/xhr",  # an empty server id
        "/ws/0.0/abc/xhr",  # dots are not allowed in ids
        "/ws/000/a.b/xhr",
        "/ws/000/abc/def/xhr",  # one level too deep
        "/ws/000/" + "s" * 65 + "/xhr",  # ids are bounded
    ],
)
def test_anything_else_is_no_route(path: str) -> None:
    assert sockjs.route(path, PREFIX) is None


def test_ids_up_to_the_bound_are_routed() -> None:
    found = sockjs.route("/ws/" + "v" * 64 + "/" + "s" * 64 + "/xhr_send", PREFIX)
    assert found == SessionRoute("v" * 64, "s" * 64, Transport.XHR_SEND)


def test_what_each_transport_is() -> None:
    assert [t for t in Transport if not t.receives] == [Transport.XHR_SEND]
    assert {t for t in Transport if t.streams} == {Transport.XHR_STREAMING, Transport.EVENTSOURCE}
    assert {t for t in Transport if t.method == "GET"} == {
        Transport.WEBSOCKET,
        Transport.EVENTSOURCE,
    }
    assert {t for t in Transport if t.method == "POST"} == {
        Transport.XHR_STREAMING,
        Transport.XHR,
        Transport.XHR_SEND,
    }


# -- frames ------------------------------------------------------------------------------------


def test_the_fixed_frames() -> None:
    assert sockjs.OPEN == b"o"
    assert sockjs.HEARTBEAT == b"h"
    assert sockjs.close_frame(*sockjs.STILL_OPEN) == b'c[2010,"Another connection still open"]'
    assert sockjs.close_frame(*sockjs.GO_AWAY) == b'c[3000,"Go away!"]'
    assert sockjs.close_frame(1008, 'say "why"') == b'c[1008,"say \\"why\\""]'


def test_messages_are_one_json_array() -> None:
    assert sockjs.messages_frame(["one", "two"]) == b'a["one","two"]'
    assert sockjs.messages_frame([]) == b"a[]"


UNSAFE = [
    "\x00",
    "\x1f",
    "\x7f",
    "\x85",
    "\x9f",
    "\xad",
    "\u0600",
    "\u0604",
    "\u070f",
    "\u17b4",
    "\u17b5",
    "\u200c",
    "\u200f",
    "\u2028",
    "\u2029",
    "\u202f",
    "\u2060",
    "\u206f",
    "\ufeff",
    "\ufff0",
    "\uffff",
]


@pytest.mark.parametrize("char", UNSAFE, ids=[f"U+{ord(c):04X}" for c in UNSAFE])
def test_unsafe_characters_go_out_as_unicode_escapes(char: str) -> None:
    frame = sockjs.messages_frame([f"x{char}y"])
    assert frame == b'a["x\\u' + f"{ord(char):04x}".encode() + b'y"]'
    assert _json(frame, b"a") == [f"x{char}y"]


@pytest.mark.parametrize("char", ["é", "€", "中", "\U0001f600", "\u2027", "\u2030", "\ufefe"])
def test_safe_characters_go_out_as_utf8(char: str) -> None:
    frame = sockjs.messages_frame([char])
    assert frame == b'a["' + char.encode() + b'"]'
    assert _json(frame, b"a") == [char]


def test_a_frame_is_ascii_safe_on_one_line() -> None:
    """No raw control character, line separator or NUL in a frame: a stream splits on LF."""
    frame = sockjs.messages_frame(["a\nb\r\n", "\u2028\u2029", "\x00", "\t"])
    assert b"\n" not in frame
    assert b"\r" not in frame
    assert b"\x00" not in frame
    assert b"\xe2\x80\xa8" not in frame  # U+2028 raw
    assert _json(frame, b"a") == ["a\nb\r\n", "\u2028\u2029", "\x00", "\t"]


def test_a_stomp_frame_with_its_nul_round_trips_through_a_messages_frame() -> None:
    stomp = Frame(
        "MESSAGE",
        (("destination", "/topic/x"), ("subscription", "s-1"), ("message-id", "m:1")),
        '{"content":"línea\\n\u2028 \\"q\\" \\\\"}'.encode(),
    )
    wire = serialize(stomp).decode()
    assert wire.endswith("\x00")
    frame = sockjs.messages_frame([wire, wire])
    decoded = _json(frame, b"a")
    assert decoded == [wire, wire]
    parser = FrameParser(Limits(), commands=SERVER_COMMANDS)
    assert isinstance(decoded, list)
    parsed = parser.feed("".join(decoded).encode())
    assert [
        (f.command, f.header("message-id"), f.body) for f in parsed if isinstance(f, Frame)
    ] == [("MESSAGE", "m:1", stomp.body)] * 2


def test_what_the_client_sends_back_parses_to_the_same_messages() -> None:
    """The client's direction: JSON.stringify of the STOMP frames, NUL included."""
    connect = "CONNECT\naccept-version:1.2\nhost:/\n\n\x00"
    body = json.dumps([connect, "\n", "ünï\u2028"]).encode()
    assert sockjs.parse_messages(body) == [connect, "\n", "ünï\u2028"]
    raw_utf8 = json.dumps([connect], ensure_ascii=False).encode()
    assert sockjs.parse_messages(raw_utf8) == [connect]


def test_an_escaped_surrogate_pair_is_one_character() -> None:
    assert sockjs.parse_messages(b'["\\ud83d\\ude00"]') == ["\U0001f600"]


def test_a_websocket_message_may_be_one_json_string() -> None:
    assert sockjs.parse_messages(b'"SEND\\n\\n\\u0000"') == ["SEND\n\n\x00"]
    assert sockjs.parse_messages(b"[]") == []


def test_an_empty_payload_is_refused() -> None:
    with pytest.raises(BadPayload, match=r"^Payload expected\.$"):
        sockjs.parse_messages(b"")


@pytest.mark.parametrize(
    "body",
    [
        b"[",
        b'["a"',
        b" ",
        b"not json",
        b"null",
        b"1",
        b"{}",
        b'{"a":"b"}',
        b"[1]",
        b'["a",null]',
        b'[["a"]]',
        b'"a"x',
        b"\xff\xfe",
        b'["\\ud800"]',  # a lone surrogate: no such character
    ],
)
def test_anything_but_strings_is_broken_json(body: bytes) -> None:
    with pytest.raises(BadPayload, match=r"^Broken JSON encoding\.$"):
        sockjs.parse_messages(body)


def test_bad_payload_is_a_value_error() -> None:
    assert issubclass(BadPayload, ValueError)


# -- what each transport writes ------------------------------------------------------------------


@pytest.mark.parametrize("transport", [Transport.XHR_STREAMING, Transport.XHR, Transport.WEBSOCKET])
def test_xhr_transports_end_each_frame_with_a_newline(transport: Transport) -> None:
    assert sockjs.framed(transport, b"o") == b"o\n"
    assert sockjs.framed(transport, b'a["x"]') == b'a["x"]\n'


def test_eventsource_writes_each_frame_as_one_event() -> None:
    assert sockjs.framed(Transport.EVENTSOURCE, b"o") == b"data: o\r\n\r\n"
    assert sockjs.framed(Transport.EVENTSOURCE, b'c[3000,"Go away!"]') == (
        b'data: c[3000,"Go away!"]\r\n\r\n'
    )


def test_preludes() -> None:
    assert sockjs.prelude(Transport.XHR_STREAMING) == b"h" * 2048 + b"\n"
    assert sockjs.prelude(Transport.EVENTSOURCE) == b"\r\n"
    assert sockjs.prelude(Transport.XHR) == b""
    assert sockjs.prelude(Transport.XHR_SEND) == b""


@pytest.mark.parametrize("websocket", [True, False])
def test_info_offers_the_websocket_and_asks_for_no_cookie(websocket: bool) -> None:
    assert json.loads(sockjs.info(websocket, 12345)) == {
        "websocket": websocket,
        "origins": ["*:*"],
        "cookie_needed": False,
        "entropy": 12345,
    }


# -- a session ---------------------------------------------------------------------------------


def state(session: Session) -> State:
    """The session's state, read anew (not narrowed by an earlier assertion)."""
    return session.state


def overflowed(session: Session) -> bool:
    return session.overflowed


def opened(max_bytes: int = 1000, now: float = 0.0) -> Session:
    """A session whose open frame went out (attached, then detached at ``now``)."""
    session = Session(max_bytes, now, DELAY)
    assert session.attach(now) is Attach.ATTACHED
    assert session.take(now) == [b"o"]
    session.detach(now)
    return session


def test_a_session_needs_a_positive_cap() -> None:
    with pytest.raises(ValueError, match="positive"):
        Session(0, 0.0, DELAY)


def test_the_open_frame_goes_first_and_once() -> None:
    session = Session(1000, 0.0, DELAY)
    assert session.state is State.NEW
    assert session.push(["early"])  # queued before anyone received: it waits for "o"
    assert session.attach(1.0) is Attach.ATTACHED
    assert session.take(1.0) == [b"o", b'a["early"]']
    assert state(session) is State.OPEN
    assert session.take(1.0) == []
    assert session.push(["later"])
    assert session.take(2.0) == [b'a["later"]']


def test_a_polling_receiver_takes_one_frame_per_call() -> None:
    session = Session(1000, 0.0, DELAY)
    session.push(["one", "two"])
    session.attach(0.0)
    assert session.take(0.0, polling=True) == [b"o"]
    session.close(1000, "bye")
    assert session.take(0.0, polling=True) == [b'a["one","two"]']
    assert state(session) is State.CLOSING
    assert session.take(0.0, polling=True) == [b'c[1000,"bye"]']
    assert state(session) is State.CLOSED
    assert session.take(0.0, polling=True) == []


def test_a_streaming_receiver_takes_everything_at_once() -> None:
    session = opened()
    session.attach(0.0)
    session.push(["one"])
    session.push(["two", "three"])
    assert session.buffered == len("one") + len("two") + len("three")
    session.close(1000, "bye")
    assert session.take(0.0) == [b'a["one","two","three"]', b'c[1000,"bye"]']
    assert session.buffered == 0
    assert state(session) is State.CLOSED


def test_a_session_closed_before_it_opened_still_sends_the_open_frame_first() -> None:
    """What take() means to do with a close asked while NEW (its own NEW branch goes to
    CLOSING when a close is set): "o", then the close frame."""
    session = Session(1000, 0.0, DELAY)
    session.close(1008, "unauthenticated")
    session.attach(0.0)
    frames = session.take(0.0)
    assert frames[0] == b"o", frames
    assert frames == [b"o", b'c[1008,"unauthenticated"]']


def test_the_queue_is_capped_past_it_everything_is_dropped() -> None:
    session = opened(max_bytes=10)
    assert session.push(["12345"])
    assert session.push(["12345"])  # exactly at the cap: still fine
    assert session.buffered == 10
    assert not session.overflowed
    assert not session.push(["1"])  # past it: the client is too slow
    assert overflowed(session)
    assert session.buffered == 0
    assert not session.push(["x"])  # and stays so: nothing is queued any more
    assert session.buffered == 0


def test_one_push_over_the_cap_overflows_at_once() -> None:
    session = opened(max_bytes=10)
    assert not session.push(["x" * 11])
    assert session.buffered == 0


def test_the_cap_counts_bytes() -> None:
    session = opened(max_bytes=10)
    assert session.push(["é" * 5])  # 10 bytes of UTF-8
    assert session.buffered == 10
    assert not session.push(["é"])  # 12 bytes: past the cap


def test_an_overflowed_session_closes_with_its_queue_dropped() -> None:
    session = opened(max_bytes=10)
    session.push(["12345"])
    assert not session.push(["1234567"])
    session.close(1008, "client too slow: outbound buffer full", drop_pending=True)
    session.attach(1.0)
    assert session.take(1.0) == [b'c[1008,"client too slow: outbound buffer full"]']


def test_close_goes_after_what_is_queued_and_drop_pending_skips_it() -> None:
    keep = opened()
    keep.push(["ERROR\n\n\x00"])
    keep.close(1002, "STOMP protocol error")
    keep.attach(0.0)
    assert keep.take(0.0) == [b'a["ERROR\\n\\n\\u0000"]', b'c[1002,"STOMP protocol error"]']

    drop = opened()
    drop.push(["queued"])
    drop.close(1008, "slow", drop_pending=True)
    assert drop.buffered == 0
    drop.attach(0.0)
    assert drop.take(0.0) == [b'c[1008,"slow"]']


def test_the_first_close_wins_and_nothing_is_queued_after_it() -> None:
    session = opened()
    session.close(1000, "first")
    session.close(1008, "second", drop_pending=True)
    assert session.close_reason == (1000, "first")
    assert session.push(["too late"])  # not an overflow: just not sent
    assert session.buffered == 0
    session.attach(0.0)
    assert session.take(0.0) == [b'c[1000,"first"]']


def test_a_second_receiver_is_busy_and_the_first_keeps_the_session() -> None:
    session = opened()
    assert session.attach(1.0) is Attach.ATTACHED
    assert session.attach(1.5) is Attach.BUSY
    assert session.receiving
    session.detach(2.0)
    assert session.attach(2.5) is Attach.ATTACHED


def test_a_closed_session_says_goodbye_with_its_close() -> None:
    session = opened()
    session.close(1000, "bye")
    session.attach(0.0)
    session.take(0.0)
    session.detach(0.0)
    assert session.attach(1.0) is Attach.CLOSED
    assert not session.receiving  # a refused request does not count as receiving
    assert session.goodbye() == b'c[1000,"bye"]'


def test_an_expired_session_says_go_away() -> None:
    session = opened()
    session.push(["never read"])
    session.expire()
    assert state(session) is State.CLOSED
    assert session.buffered == 0
    assert session.close_reason == sockjs.GO_AWAY
    assert session.attach(0.0) is Attach.CLOSED
    assert session.goodbye() == b'c[3000,"Go away!"]'


def test_expiry_keeps_a_close_already_asked() -> None:
    session = opened()
    session.close(1008, "refused")
    session.expire()
    assert session.goodbye() == b'c[1008,"refused"]'


def test_the_heartbeat_is_due_after_the_last_write() -> None:
    session = Session(1000, 10.0, DELAY)
    assert session.heartbeat_at(25.0) == 35.0
    session.attach(12.0)
    assert session.take(12.0) == [b"o"]
    assert session.heartbeat_at(25.0) == 37.0
    assert session.take(20.0) == []  # nothing written: the time does not move
    assert session.heartbeat_at(25.0) == 37.0
    assert session.heartbeat(37.0) == b"h"
    assert session.heartbeat_at(25.0) == 62.0
    session.push(["m"])
    session.take(40.0)
    assert session.heartbeat_at(2.0) == 42.0
    assert session.heartbeat_at() == 40.0 + sockjs.HEARTBEAT_SECONDS


def test_a_session_expires_delay_seconds_after_its_last_receiver() -> None:
    session = Session(1000, 100.0, DELAY)
    assert not session.expired(100.0 + DELAY - 0.001)
    assert session.expired(100.0 + DELAY)  # made, never received: from its making
    session = Session(1000, 100.0, DELAY)
    session.attach(103.0)
    assert not session.expired(1000.0)  # a receiver is attached: never
    session.detach(104.0)
    assert not session.expired(104.0 + DELAY - 0.001)
    assert session.expired(104.0 + DELAY)
    session.attach(110.0)  # each receiver renews it
    session.detach(111.0)
    assert not session.expired(111.0 + DELAY - 0.001)
    assert session.expired(111.0 + DELAY)
