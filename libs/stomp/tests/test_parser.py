"""Incremental parsing: fragmentation, heart-beats, content-length, limits, failure, header
decoding per version, the receipt of a frame that failed."""

from __future__ import annotations

import pytest
from chat_stomp.exceptions import LimitExceeded, ProtocolError, UsageError
from chat_stomp.frames import Frame, serialize
from chat_stomp.parser import HEARTBEAT_EVENT, FrameParser, Limits, ParseEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SEND = b"SEND\ndestination:/app/chat.send\nreceipt:r1\n\n{}\x00"
SUBSCRIBE = b"SUBSCRIBE\nid:0\ndestination:/user/queue/messages\n\n\x00"


def only_frame(data: bytes) -> Frame:
    [event] = FrameParser().feed(data)
    assert isinstance(event, Frame)
    return event


def feed_all(parser: FrameParser, chunks: list[bytes]) -> list[ParseEvent]:
    events: list[ParseEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def test_one_frame() -> None:
    [frame] = FrameParser().feed(SEND)
    assert frame == Frame("SEND", (("destination", "/app/chat.send"), ("receipt", "r1")), b"{}")


def test_several_frames_in_one_chunk_with_heartbeats_between() -> None:
    events = FrameParser().feed(b"\n" + SEND + b"\r\n\n" + SUBSCRIBE + SEND)
    kinds = [e.command if isinstance(e, Frame) else "EOL" for e in events]
    assert kinds == ["EOL", "SEND", "EOL", "EOL", "SUBSCRIBE", "SEND"]


def test_byte_by_byte_equals_whole_chunk() -> None:
    stream = b"\r\n" + SEND + b"\n" + SUBSCRIBE + b"\r\n" + SEND
    whole = FrameParser().feed(stream)
    parser = FrameParser()
    pieces = feed_all(parser, [stream[i : i + 1] for i in range(len(stream))])
    assert pieces == whole
    assert parser.buffered == 0


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_any_split_equals_whole_chunk(cuts: list[int]) -> None:
    stream = SEND + b"\n" + SUBSCRIBE + b"SEND\ncontent-length:3\n\na\x00b\x00\r\n"
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert feed_all(FrameParser(), chunks) == FrameParser().feed(stream)


def test_lone_cr_waits_for_its_lf() -> None:
    parser = FrameParser()
    assert parser.feed(b"\r") == []
    assert parser.feed(b"\n") == [HEARTBEAT_EVENT]


def test_crlf_line_endings() -> None:
    [frame] = FrameParser().feed(b"SEND\r\ndestination:/a\r\nx:y\r\n\r\nbody\x00")
    assert frame == Frame("SEND", (("destination", "/a"), ("x", "y")), b"body")


def test_content_length_body_may_hold_nuls() -> None:
    frame = only_frame(b"SEND\ncontent-length:5\n\n\x00a\x00b\x00\x00")
    assert frame.body == b"\x00a\x00b\x00"


def test_first_content_length_wins() -> None:
    frame = only_frame(b"SEND\ncontent-length:1\ncontent-length:9\n\nx\x00")
    assert frame.body == b"x"


def test_content_length_too_short_misses_the_nul() -> None:
    with pytest.raises(ProtocolError, match="NUL"):
        FrameParser().feed(b"SEND\ncontent-length:2\n\nabc\x00")


def test_content_length_too_long_waits_then_fails() -> None:
    parser = FrameParser()
    assert parser.feed(b"SEND\ncontent-length:10\n\nabc\x00") == []
    assert parser.buffered > 0
    with pytest.raises(ProtocolError, match="NUL"):
        parser.feed(SEND)  # the next frame is swallowed as body; byte 10 is not NUL


def test_content_length_too_long_hits_the_frame_size_limit() -> None:
    limits = Limits(max_frame_bytes=64, max_body=1000)
    with pytest.raises(LimitExceeded, match="frame too large"):
        FrameParser(limits).feed(b"SEND\ncontent-length:100\n\n")


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", " 3", "+3", "\u0663"])
def test_bad_content_length(value: str) -> None:
    with pytest.raises(ProtocolError, match="content-length"):
        FrameParser().feed(f"SEND\ncontent-length:{value}\n\nabc\x00".encode())


def test_announced_body_over_limit_is_refused_before_the_body() -> None:
    parser = FrameParser()
    with pytest.raises(LimitExceeded, match="body"):
        parser.feed(b"SEND\ncontent-length:104857600\n\n")
    assert parser.buffered == 0


def test_unterminated_body_over_limit() -> None:
    parser = FrameParser(Limits(max_body=8))
    parser.feed(b"SEND\n\n12345678")
    with pytest.raises(LimitExceeded, match="body"):
        parser.feed(b"9")


def test_terminated_body_over_limit() -> None:
    with pytest.raises(LimitExceeded, match="body"):
        FrameParser(Limits(max_body=8)).feed(b"SEND\n\n123456789\x00")


def test_too_many_headers() -> None:
    parser = FrameParser(Limits(max_headers=2))
    parser.feed(b"SEND\na:1\nb:2\n\n\x00")
    with pytest.raises(LimitExceeded, match="headers"):
        parser.feed(b"SEND\na:1\nb:2\nc:3\n\n\x00")


def test_header_line_too_long_even_without_newline() -> None:
    parser = FrameParser(Limits(max_header_line=16))
    parser.feed(b"SEND\nx:" + b"a" * 14 + b"\n\n\x00")
    with pytest.raises(LimitExceeded, match="line"):
        parser.feed(b"SEND\nx:" + b"a" * 40)


def test_frame_size_limit_caps_the_buffer() -> None:
    limits = Limits(max_frame_bytes=128, max_body=1000, max_header_line=1000)
    parser = FrameParser(limits)
    with pytest.raises(LimitExceeded, match="frame"):
        parser.feed(b"SEND\n\n" + b"x" * 500)
    assert parser.buffered == 0


def test_frame_of_exactly_the_size_limit_passes_one_more_byte_fails() -> None:
    limits = Limits(max_frame_bytes=64, max_body=64)
    head = b"SEND\n\n"
    exact = head + b"x" * (64 - len(head) - 1) + b"\x00"
    assert len(exact) == 64
    parser = FrameParser(limits)
    assert len(feed_all(parser, [exact[i : i + 1] for i in range(64)])) == 1
    with pytest.raises(LimitExceeded, match="frame"):
        FrameParser(limits).feed(head + b"x" * (64 - len(head)) + b"\x00")
    declared = b"SEND\ncontent-length:%d\n\n"
    fits = declared % (64 - len(declared % 40) - 1)
    assert len(FrameParser(limits).feed(fits + b"y" * (64 - len(fits) - 1) + b"\x00")) == 1
    with pytest.raises(LimitExceeded, match="frame"):
        FrameParser(limits).feed(declared % (64 - len(declared % 40)))


def test_many_small_frames_in_a_chunk_larger_than_the_frame_limit() -> None:
    limits = Limits(max_frame_bytes=128, max_body=64)
    events = FrameParser(limits).feed(SUBSCRIBE * 20)
    assert len(events) == 20


def test_unknown_command() -> None:
    with pytest.raises(ProtocolError, match="unknown command"):
        FrameParser().feed(b"HELLO\n\n\x00")


def test_server_commands_are_unknown_to_the_server_parser() -> None:
    with pytest.raises(ProtocolError, match="unknown command"):
        FrameParser().feed(b"MESSAGE\n\n\x00")


@pytest.mark.parametrize("line", [b"no-colon", b":empty-name"])
def test_malformed_header_line(line: bytes) -> None:
    with pytest.raises(ProtocolError, match="header"):
        FrameParser().feed(b"SEND\n" + line + b"\n\n\x00")


def test_invalid_utf8_header() -> None:
    with pytest.raises(ProtocolError, match="UTF-8"):
        FrameParser().feed(b"SEND\nx:\xff\n\n\x00")


def test_colon_in_value_is_kept() -> None:
    frame = only_frame(b"CONNECT\nhost:a:b\n\n\x00")
    assert frame.header("host") == "a:b"


def test_failure_is_sticky() -> None:
    parser = FrameParser()
    with pytest.raises(ProtocolError) as first:
        parser.feed(b"NOPE\n\n\x00")
    with pytest.raises(ProtocolError) as again:
        parser.feed(SEND)
    assert again.value is first.value
    assert parser.error is first.value


def test_frames_before_a_fault_are_returned_then_the_fault_is_raised() -> None:
    parser = FrameParser()
    events = parser.feed(SEND + b"NOPE\n\n\x00")
    assert [e.command for e in events if isinstance(e, Frame)] == ["SEND"]
    assert parser.error is not None
    with pytest.raises(ProtocolError, match="unknown command"):
        parser.feed(b"")


# -- header decoding per version -------------------------------------------------------------

ESCAPED = b"SEND\ndestination:/a\\cb\nnote:back\\\\slash\\nnext\n\n\x00"


@pytest.mark.parametrize(
    ("version", "destination", "note"),
    [
        ("1.2", "/a:b", "back\\slash\nnext"),
        ("1.1", "/a:b", "back\\slash\nnext"),
        ("1.0", "/a\\cb", "back\\\\slash\\nnext"),
        (None, "/a\\cb", "back\\\\slash\\nnext"),
    ],
)
def test_headers_are_decoded_as_the_version_writes_them(
    version: str | None, destination: str, note: str
) -> None:
    [frame] = FrameParser(version=version).feed(ESCAPED)
    assert isinstance(frame, Frame)
    assert frame.headers == (("destination", destination), ("note", note))


def test_carriage_return_escape_exists_only_in_12() -> None:
    data = b"SEND\nk:a\\rb\n\n\x00"
    assert only_frame(data).header("k") == "a\rb"
    with pytest.raises(ProtocolError, match="escape"):
        FrameParser(version="1.1").feed(data)
    [frame] = FrameParser(version="1.0").feed(data)
    assert isinstance(frame, Frame)
    assert frame.header("k") == "a\\rb"


@pytest.mark.parametrize("version", [None, "1.0", "1.1", "1.2"])
def test_connect_is_never_decoded(version: str | None) -> None:
    [frame] = FrameParser(version=version).feed(b"CONNECT\npasscode:a\\cb\\t\n\n\x00")
    assert isinstance(frame, Frame)
    assert frame.header("passcode") == "a\\cb\\t"


@pytest.mark.parametrize("version", [None, "1.0", "1.1", "1.2"])
def test_a_bare_carriage_return_in_a_header_is_refused(version: str | None) -> None:
    with pytest.raises(ProtocolError, match="carriage return"):
        FrameParser(version=version).feed(b"SEND\nk:a\rb\n\n\x00")
    [frame] = FrameParser(version=version).feed(b"SEND\r\nk:ab\r\n\r\n\x00")
    assert isinstance(frame, Frame)
    assert frame.header("k") == "ab"


def test_switching_version_applies_to_frames_completed_afterwards() -> None:
    parser = FrameParser(version=None)
    parser.feed(b"SEND\nk:a\\cb\n")  # the header line is in, the frame is not
    parser.version = "1.2"
    [frame] = parser.feed(b"\n\x00")
    assert isinstance(frame, Frame)
    assert frame.header("k") == "a:b"
    assert parser.version == "1.2"
    with pytest.raises(UsageError):
        parser.version = "0.9"


# -- the receipt of a frame that failed ------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"SEND\nreceipt:r1\ncontent-length:104857600\n\n", "body too large"),
        (b"SEND\nreceipt:r1\ncontent-length:2\n\nabc\x00", "NUL"),
        (b"SEND\nreceipt:r1\nk:\\t\n\n\x00", "escape"),
        (b"SEND\nreceipt:r1\nk:a\rb\n\n\x00", "carriage return"),
        (b"SEND\nreceipt:r1\nbroken\n\n\x00", "malformed"),
        (b"SEND\nreceipt:r1\n" + b"x" * 300, "too large"),
    ],
)
def test_a_fault_carries_the_receipt_of_the_frame_in_progress(data: bytes, message: str) -> None:
    parser = FrameParser(Limits(max_frame_bytes=256, max_header_line=1000))
    with pytest.raises(ProtocolError, match=message) as caught:
        parser.feed(data)
    assert caught.value.receipt == "r1"
    assert parser.error is caught.value


def test_the_receipt_of_a_failed_frame_is_decoded_and_dropped_if_undecodable() -> None:
    with pytest.raises(ProtocolError) as escaped:
        FrameParser().feed(b"SEND\nreceipt:r\\c1\nk:\\t\n\n\x00")
    assert escaped.value.receipt == "r:1"
    with pytest.raises(ProtocolError) as broken:
        FrameParser().feed(b"SEND\nreceipt:r\\t1\n\n\x00")
    assert broken.value.receipt is None


def test_a_fault_after_a_complete_frame_does_not_take_its_receipt() -> None:
    parser = FrameParser()
    [frame] = parser.feed(SEND + b"NOPE\n\n\x00")  # SEND asked for receipt r1
    assert isinstance(frame, Frame)
    assert parser.error is not None
    assert parser.error.receipt is None


# -- property: garbage in, only ProtocolError out, memory bounded -----------------------------

SMALL = Limits(max_frame_bytes=256, max_headers=4, max_header_line=64, max_body=128)
SEEDS = [
    SEND,
    SUBSCRIBE,
    b"\r\n\n",
    serialize(Frame("SEND", (("destination", "/a"), ("k", "v:\\\n")), b"\x00" * 5)),
    b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00",
    b"SEND\ncontent-length:4\n\nab\x00\x00\x00",
]


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    stream = bytearray(b"".join(draw(st.lists(st.sampled_from(SEEDS), max_size=6))))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = draw(st.integers(0, len(stream)))
        if kind == "insert":
            stream[pos:pos] = draw(st.binary(min_size=1, max_size=300))
        elif stream and pos < len(stream):
            if kind == "flip":
                stream[pos] = draw(st.integers(0, 255))
            else:
                del stream[pos : pos + draw(st.integers(1, 20))]
    return bytes(stream)


def check_only_protocol_errors(stream: bytes, cuts: list[int]) -> None:
    parser = FrameParser(SMALL)
    points = sorted({min(c, len(stream)) for c in cuts})
    bounds = zip([0, *points], [*points, len(stream)], strict=True)
    for a, b in bounds:
        try:
            parser.feed(stream[a:b])
        except ProtocolError:
            assert parser.error is not None
            return
        finally:
            assert parser.buffered <= SMALL.max_frame_bytes


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=10))
def test_random_bytes_raise_only_protocol_errors(stream: bytes, cuts: list[int]) -> None:
    check_only_protocol_errors(stream, cuts)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mutated_streams(), st.lists(st.integers(0, 2000), max_size=10))
def test_mutated_frames_raise_only_protocol_errors(stream: bytes, cuts: list[int]) -> None:
    check_only_protocol_errors(stream, cuts)
