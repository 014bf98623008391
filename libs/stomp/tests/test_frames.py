"""Frame value, escaping per version and serialization; round trips through the parser."""

from __future__ import annotations

import pytest
from chat_stomp.exceptions import ProtocolError, UsageError
from chat_stomp.frames import (
    ALL_COMMANDS,
    CLIENT_COMMANDS,
    RAW_HEADER_COMMANDS,
    SERVER_COMMANDS,
    Frame,
    decode_headers,
    encode_message,
    error_frame,
    escape,
    message_bytes,
    serialize,
    unescape,
)
from chat_stomp.parser import FrameParser, Limits
from hypothesis import given
from hypothesis import strategies as st

VERSIONS: list[str | None] = [None, "1.0", "1.1", "1.2"]


def parse_one(data: bytes, version: str | None = "1.2") -> Frame:
    events = FrameParser(commands=ALL_COMMANDS, version=version).feed(data)
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


# -- header encoding per version ------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "raw", "wire"),
    [
        ("1.1", "a\nb", "a\\nb"),
        ("1.1", "a:b", "a\\cb"),
        ("1.1", "a\\b", "a\\\\b"),
        ("1.1", "\\r", "\\\\r"),
        ("1.0", "a:b", "a:b"),
        ("1.0", "a\\cb", "a\\cb"),
        ("1.0", "\\", "\\"),
        (None, "a:b\\n", "a:b\\n"),
    ],
)
def test_escape_per_version(version: str | None, raw: str, wire: str) -> None:
    assert escape(raw, version) == wire
    assert unescape(wire, version) == raw


def test_stomp_11_has_no_carriage_return_escape() -> None:
    with pytest.raises(ProtocolError, match="escape"):
        unescape("a\\rb", "1.1")
    with pytest.raises(UsageError, match=r"STOMP 1\.1"):
        escape("a\rb", "1.1")
    with pytest.raises(UsageError):
        serialize(Frame("MESSAGE", (("k", "a\rb"),)), "1.1")


@pytest.mark.parametrize("bad", ["\\t", "a\\", "\\C"])
def test_undefined_escape_is_an_error_in_11_and_plain_text_in_10(bad: str) -> None:
    with pytest.raises(ProtocolError, match="escape"):
        unescape(bad, "1.1")
    assert unescape(bad, "1.0") == bad
    assert unescape(bad, None) == bad


@pytest.mark.parametrize("version", [None, "1.0"])
@pytest.mark.parametrize(
    "header", [("k", "a\nb"), ("k", "a\rb"), ("k:x", "v"), ("k\n", "v"), ("", "v")]
)
def test_stomp_10_cannot_write_line_breaks_or_a_colon_in_a_name(
    version: str | None, header: tuple[str, str]
) -> None:
    with pytest.raises(UsageError):
        serialize(Frame("MESSAGE", (header,)), version)


def test_serialize_writes_each_version_its_own_way() -> None:
    frame = Frame("RECEIPT", (("receipt-id", "a:b\\c\nd"),))
    assert serialize(frame, "1.2") == b"RECEIPT\nreceipt-id:a\\cb\\\\c\\nd\n\n\x00"
    assert serialize(frame, "1.1") == b"RECEIPT\nreceipt-id:a\\cb\\\\c\\nd\n\n\x00"
    one_oh = Frame("RECEIPT", (("receipt-id", "a:b\\c"),))
    assert serialize(one_oh, "1.0") == b"RECEIPT\nreceipt-id:a:b\\c\n\n\x00"
    assert serialize(one_oh, None) == serialize(one_oh, "1.0")


@pytest.mark.parametrize("version", VERSIONS)
def test_connect_and_connected_are_raw_in_every_version(version: str | None) -> None:
    connected = Frame("CONNECTED", (("version", "1.2"), ("server", "edge a:b\\c")))
    assert serialize(connected, version) == b"CONNECTED\nversion:1.2\nserver:edge a:b\\c\n\n\x00"
    connect = b"CONNECT\npasscode:se\\cret:x\n\n\x00"
    assert parse_one(connect, version).header("passcode") == "se\\cret:x"
    with pytest.raises(UsageError):
        serialize(Frame("CONNECTED", (("user-name", "a\nb"),)), version)


def test_an_unknown_version_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"2\.0"):
        serialize(Frame("RECEIPT"), "2.0")
    with pytest.raises(UsageError):
        FrameParser(version="1.3")


def test_decode_headers_undoes_what_the_wire_holds() -> None:
    wire = (("a\\cb", "x\\ny"), ("k", "\\\\"))
    assert decode_headers("SEND", wire, "1.2") == (("a:b", "x\ny"), ("k", "\\"))
    assert decode_headers("SEND", wire, "1.1") == (("a:b", "x\ny"), ("k", "\\"))
    assert decode_headers("SEND", wire, "1.0") == wire
    assert decode_headers("CONNECT", wire, "1.2") == wire
    with pytest.raises(ProtocolError):
        decode_headers("SEND", (("k", "\\r"),), "1.1")


PLAIN_HEADERS = [("content-type", "application/json"), ("x-seq", "3")]


def test_encoded_message_without_special_characters_is_serialized_once_for_all() -> None:
    encoded = encode_message(PLAIN_HEADERS, b"{}")
    tails = {id(encoded.tail_for(v)) for v in VERSIONS}
    assert len(tails) == 1
    assert encoded.tail is encoded.tail_for("1.0")


def test_encoded_message_tail_is_made_per_version_and_kept() -> None:
    encoded = encode_message([("x-note", "a:b\\c")], b"{}")
    assert encoded.tail_for("1.2") is encoded.tail_for("1.2")
    assert encoded.tail_for("1.2").startswith(b"x-note:a\\cb\\\\c\n")
    assert encoded.tail_for("1.1") == encoded.tail_for("1.2")
    assert encoded.tail_for("1.0").startswith(b"x-note:a:b\\c\n")
    assert encoded.tail_for(None) is encoded.tail_for("1.0")
    assert encoded.body_size == 2
    assert encoded.body == b"{}"


def test_encoded_message_body_with_nuls_comes_back_in_every_version() -> None:
    body = b"\x00a\x00" * 5
    encoded = encode_message([("x-note", "a:b")], body)
    assert encoded.body == body
    for version in VERSIONS:
        data = message_bytes(
            encoded,
            destination="/d",
            message_id="m",
            subscription_id="s",
            ack_id=None,
            version=version,
        )
        assert parse_one(data, version).body == body


def test_encoded_message_a_version_cannot_carry_fails_only_for_that_version() -> None:
    encoded = encode_message([("x-note", "line\nbreak")], b"")
    assert b"x-note:line\\nbreak\n" in encoded.tail_for("1.1")
    with pytest.raises(UsageError):
        encoded.tail_for("1.0")
    carriage = encode_message([("x-note", "a\rb")], b"")
    assert b"x-note:a\\rb\n" in carriage.tail_for("1.2")
    with pytest.raises(UsageError):
        carriage.tail_for("1.1")


@pytest.mark.parametrize("version", VERSIONS)
def test_message_bytes_per_version_round_trip(version: str | None) -> None:
    encoded = encode_message([("x-session-id", "s:1"), ("x-note", "back\\slash")], b"hi")
    data = message_bytes(
        encoded,
        destination="/topic/session.1",
        message_id="s:1:7",
        subscription_id="sub:0",
        ack_id="4",
        version=version,
    )
    frame = parse_one(data, version)
    assert frame.header("message-id") == "s:1:7"
    assert frame.header("subscription") == "sub:0"
    assert frame.header("x-session-id") == "s:1"
    assert frame.header("x-note") == "back\\slash"
    assert frame.body == b"hi"
    assert data.endswith(encoded.tail_for(version))
    one_two = message_bytes(
        encoded, destination="/d", message_id="s:1", subscription_id="a", ack_id=None
    )
    assert b"message-id:s\\c1\n" in one_two
    assert b"x-note:back\\\\slash\n" in one_two


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


NAME_11 = st.text(min_size=1, max_size=12).filter(lambda s: "\r" not in s)
VALUE_11 = st.text(max_size=20).filter(lambda s: "\r" not in s)
BACKSLASHY = st.text(alphabet="ab\\:\r\nc", max_size=12)


@st.composite
def versioned_frames(draw: st.DrawFn, version: str | None) -> Frame:
    """Frames whose every header ``version`` can write: anything in 1.2; no CR in 1.1; in
    1.0 no line break, and no colon in a name."""
    command = draw(st.sampled_from(sorted(ALL_COMMANDS)))
    if command in RAW_HEADER_COMMANDS or version in (None, "1.0"):
        names, values = RAW_NAME, RAW_VALUE
    elif version == "1.1":
        names, values = NAME_11, VALUE_11
    else:
        names, values = st.text(min_size=1, max_size=12), st.one_of(ANY_TEXT, BACKSLASHY)
    headers = draw(
        st.lists(st.tuples(names.filter(lambda n: n != "content-length"), values), max_size=6)
    )
    body = draw(st.binary(max_size=32))
    if body and (command in SERVER_COMMANDS or b"\0" in body):
        headers.append(("content-length", str(len(body))))
    return Frame(command, tuple(headers), body)


@pytest.mark.parametrize("version", VERSIONS)
@given(data=st.data())
def test_round_trip_any_frame_in_every_version(version: str | None, data: st.DataObject) -> None:
    frame = data.draw(versioned_frames(version))
    assert parse_one(serialize(frame, version), version) == frame


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@given(text=st.text(max_size=30))
def test_escape_round_trips_whatever_the_version_can_write(version: str, text: str) -> None:
    if version == "1.1" and "\r" in text:
        with pytest.raises(UsageError):
            escape(text, version)
        return
    wire = escape(text, version)
    assert not set(wire) & set("\r\n:")
    assert unescape(wire, version) == text


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
