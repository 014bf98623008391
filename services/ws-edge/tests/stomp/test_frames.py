"""Frame value, escaping and serialization; round trips through the parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ws_edge.stomp.exceptions import ProtocolError, UsageError
from ws_edge.stomp.frames import (
    ALL_COMMANDS,
    CLIENT_COMMANDS,
    RAW_HEADER_COMMANDS,
    SERVER_COMMANDS,
    Frame,
    encode_message,
    error_frame,
    escape,
    message_bytes,
    serialize,
    unescape,
)
from ws_edge.stomp.parser import FrameParser, Limits


def parse_one(data: bytes) -> Frame:
    events = FrameParser(commands=ALL_COMMANDS).feed(data)
    frames = [e for e in events if isinstance(e, Frame)]
    assert len(frames) == 1
    return frames[0]


@pytest.mark.parametrize(
    ("raw", "wire"),
    [
        ("a\rb", "a\\rb"),
        ("a\nb", "a\\nb"),
        ("a:b", "a\\cb"),
        ("a\\b", "a\\\\b"),
        ("\\n", "\\\\n"),
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_escape_each_special_octet(raw: str, wire: str) -> None:
    assert escape(raw) == wire
    assert unescape(wire) == raw


@pytest.mark.parametrize("bad", ["\\t", "a\\", "\\x41", "\\C", "\\ "])
def test_undefined_escape_is_a_protocol_error(bad: str) -> None:
    with pytest.raises(ProtocolError, match="escape"):
        unescape(bad)


def test_undefined_escape_in_a_frame_fails_the_parse() -> None:
    with pytest.raises(ProtocolError, match="escape"):
        FrameParser().feed(b"SEND\ndestination:/a\\tb\n\n\x00")


def test_connect_headers_are_not_unescaped() -> None:
    frame = parse_one(b"CONNECT\npasscode:se\\cret:x\n\n\x00")
    assert frame.header("passcode") == "se\\cret:x"


def test_serialize_escapes_every_special_octet_in_names_and_values() -> None:
    frame = Frame("MESSAGE", (("k:\n", "v\r\n:\\"),), b"")
    assert serialize(frame) == b"MESSAGE\nk\\c\\n:v\\r\\n\\c\\\\\n\n\x00"
    assert parse_one(serialize(frame)) == frame


def test_connected_headers_are_written_raw() -> None:
    frame = Frame("CONNECTED", (("version", "1.2"), ("server", "edge/1 a\\b")))
    assert serialize(frame) == b"CONNECTED\nversion:1.2\nserver:edge/1 a\\b\n\n\x00"


@pytest.mark.parametrize("value", ["a\nb", "a\rb"])
def test_raw_frames_refuse_line_breaks_in_values(value: str) -> None:
    with pytest.raises(UsageError):
        serialize(Frame("CONNECTED", (("user-name", value),)))


def test_header_first_occurrence_wins() -> None:
    frame = parse_one(b"SEND\ndestination:/first\ndestination:/second\n\n\x00")
    assert frame.header("destination") == "/first"
    assert frame.headers == (("destination", "/first"), ("destination", "/second"))
    assert frame.header("missing") is None
    assert frame.header("missing", "dflt") == "dflt"


def test_server_frames_get_content_length() -> None:
    data = serialize(Frame("MESSAGE", (("destination", "/d"),), b"hello"))
    assert data == b"MESSAGE\ndestination:/d\ncontent-length:5\n\nhello\x00"
    assert serialize(Frame("RECEIPT", (("receipt-id", "1"),))) == b"RECEIPT\nreceipt-id:1\n\n\x00"


def test_client_frame_body_with_nul_gets_content_length() -> None:
    data = serialize(Frame("SEND", (("destination", "/d"),), b"a\x00b"))
    assert b"content-length:3\n" in data
    assert serialize(Frame("SEND", (), b"text")) == b"SEND\n\ntext\x00"


def test_wrong_declared_content_length_is_refused() -> None:
    with pytest.raises(UsageError):
        serialize(Frame("MESSAGE", (("content-length", "9"),), b"abc"))


def test_error_frame_carries_message_and_receipt_id() -> None:
    frame = error_frame("bad: thing", receipt_id="r-7", body=b"why")
    assert frame.header("message") == "bad: thing"
    assert frame.header("receipt-id") == "r-7"
    assert parse_one(serialize(frame)).header("message") == "bad: thing"


def test_encoded_message_is_shared_and_completed_per_subscriber() -> None:
    body = b'{"content":"hi\\u0000"}\x00tail'
    encoded = encode_message([("content-type", "application/json"), ("x-seq", "3")], body)
    one = message_bytes(
        encoded, destination="/topic/s.1", message_id="m1", subscription_id="a", ack_id=None
    )
    two = message_bytes(
        encoded, destination="/topic/s.1", message_id="m1", subscription_id="b:2", ack_id="9"
    )
    assert one.endswith(encoded.tail)
    assert two.endswith(encoded.tail)
    frame = parse_one(two)
    assert frame.body == body
    assert frame.header("subscription") == "b:2"
    assert frame.header("ack") == "9"
    assert frame.header("x-seq") == "3"
    assert frame.header("content-length") == str(len(body))
    assert parse_one(one).header("ack") is None


def test_encode_message_refuses_reserved_headers() -> None:
    with pytest.raises(UsageError):
        encode_message([("subscription", "x")], b"")


# -- round trips ------------------------------------------------------------------------------

ANY_TEXT = st.text(max_size=20)
RAW_NAME = st.text(min_size=1, max_size=12).filter(lambda s: not set(s) & set("\r\n:"))
RAW_VALUE = st.text(max_size=20).filter(lambda s: not set(s) & set("\r\n"))


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    command = draw(st.sampled_from(sorted(ALL_COMMANDS)))
    raw = command in RAW_HEADER_COMMANDS
    names = RAW_NAME if raw else st.text(min_size=1, max_size=12)
    values = RAW_VALUE if raw else ANY_TEXT
    headers = draw(
        st.lists(st.tuples(names.filter(lambda n: n != "content-length"), values), max_size=6)
    )
    body = draw(st.binary(max_size=64))
    if body and (command in SERVER_COMMANDS or b"\0" in body or draw(st.booleans())):
        headers.append(("content-length", str(len(body))))
    return Frame(command, tuple(headers), body)


@given(frames())
def test_round_trip_any_frame(frame: Frame) -> None:
    assert parse_one(serialize(frame)) == frame


@pytest.mark.parametrize("command", sorted(CLIENT_COMMANDS | SERVER_COMMANDS))
def test_round_trip_every_command_with_every_escape(command: str) -> None:
    headers: tuple[tuple[str, str], ...]
    if command in RAW_HEADER_COMMANDS:
        headers = (("accept-version", "1.2"), ("passcode", "a:b\\c"))
    else:
        headers = (("na:me", "cr\r lf\n colon: backslash\\"), ("dup", "1"), ("dup", "2"))
    body = b"x\x00y" if command in ("SEND", "MESSAGE") else b""
    frame = Frame(command, headers, body)
    expected = frame
    if body:
        expected = Frame(command, (*headers, ("content-length", "3")), body)
    assert parse_one(serialize(frame)) == expected


def test_limits_reject_non_positive_values() -> None:
    with pytest.raises(ValueError, match="max_body"):
        Limits(max_body=0)
