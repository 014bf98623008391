"""ServerConnection: handshake, subscriptions, acks, receipts, violations, heart-beats."""

from __future__ import annotations

import pytest
from chat_stomp.connection import ServerConnection
from chat_stomp.events import (
    Acked,
    AckMode,
    CloseReason,
    ConnectionTerminated,
    ConnectRequested,
    DisconnectRequested,
    Event,
    HeartbeatReceived,
    Nacked,
    SendReceived,
    Subscribed,
    Unsubscribed,
)
from chat_stomp.exceptions import InvalidState, UsageError
from chat_stomp.frames import ALL_COMMANDS, Frame, encode_message
from chat_stomp.parser import FrameParser, Limits
from chat_stomp.state import TRANSITIONS, ConnectionState, Trigger
from hypothesis import given
from hypothesis import strategies as st

CONNECT_12 = b"CONNECT\naccept-version:1.0,1.1,1.2\nhost:chat\nheart-beat:0,0\n\n\x00"


def frame(command: str, *headers: tuple[str, str], body: bytes = b"") -> bytes:
    lines = "".join(f"{k}:{v}\n" for k, v in headers)
    return f"{command}\n{lines}\n".encode() + body + b"\x00"


def sent_frames(
    conn: ServerConnection, now: float = 0.0, version: str | None = "1.2"
) -> list[Frame]:
    parser = FrameParser(commands=ALL_COMMANDS, version=version)
    out: list[Frame] = []
    for chunk in conn.data_to_send(now):
        out.extend(e for e in parser.feed(chunk) if isinstance(e, Frame))
    return out


def connected(limits: Limits | None = None, connect: bytes = CONNECT_12) -> ServerConnection:
    conn = ServerConnection(limits, server_name="edge/test")
    conn.receive_data(connect, 0.0)
    [request] = conn.events_received()
    assert isinstance(request, ConnectRequested)
    conn.accept("alice", 0.0)
    assert conn.state is ConnectionState.CONNECTED
    conn.data_to_send(0.0)
    return conn


def assert_error_and_closed(
    conn: ServerConnection, message: str, receipt: str | None = None, version: str | None = "1.2"
) -> Frame:
    frames = sent_frames(conn, version=version)
    assert frames, "an ERROR frame should have been queued"
    error = frames[-1]
    assert error.command == "ERROR"
    assert message in error.header("message", "")
    assert error.header("receipt-id") == receipt
    assert conn.is_closed
    assert conn.close_expected()
    assert isinstance(conn.events_received()[-1], ConnectionTerminated)
    return error


# -- handshake -------------------------------------------------------------------------------


def test_connect_event_carries_credentials_and_accept_answers_connected() -> None:
    conn = ServerConnection(server_name="edge/1.0")
    conn.receive_data(
        frame(
            "STOMP",
            ("accept-version", "1.2"),
            ("host", "chat"),
            ("login", "bob"),
            ("passcode", "tok:en"),
            ("Authorization", "Bearer abc"),
            ("heart-beat", "5000,15000"),
        ),
        0.0,
    )
    [request] = conn.events_received()
    assert isinstance(request, ConnectRequested)
    assert (request.login, request.passcode, request.host) == ("bob", "tok:en", "chat")
    assert request.authorization_header == "Bearer abc"
    assert request.client_heartbeat == (5000, 15000)
    assert conn.state is ConnectionState.AUTHENTICATING
    conn.accept("bob", 1.0)
    [connected_frame] = sent_frames(conn)
    assert connected_frame.command == "CONNECTED"
    assert connected_frame.headers == (
        ("version", "1.2"),
        ("heart-beat", "10000,10000"),
        ("server", "edge/1.0"),
        ("user-name", "bob"),
    )
    monitor = conn.heartbeat
    assert monitor is not None
    assert (monitor.send_interval, monitor.expect_interval) == (15.0, 10.0)


@pytest.mark.parametrize(
    ("accept_version", "expected"),
    [(None, "1.0"), ("1.0", "1.0"), ("1.1", "1.1"), ("1.0,1.1", "1.1"), ("1.2,1.1", "1.2")],
)
def test_version_negotiation(accept_version: str | None, expected: str) -> None:
    headers = [] if accept_version is None else [("accept-version", accept_version)]
    conn = ServerConnection()
    conn.receive_data(frame("CONNECT", *headers, ("heart-beat", "1000,1000")), 0.0)
    [request] = conn.events_received()
    assert isinstance(request, ConnectRequested)
    assert request.version == expected
    conn.accept("u", 0.0)
    [answer] = sent_frames(conn)
    assert answer.header("version") == expected
    assert (answer.header("heart-beat") is None) == (expected == "1.0")


def test_unsupported_version_gets_error_with_version_header() -> None:
    conn = ServerConnection()
    conn.receive_data(frame("CONNECT", ("accept-version", "2.0")), 0.0)
    error = assert_error_and_closed(conn, "version")
    assert error.header("version") == "1.0,1.1,1.2"


def test_reject_sends_error_and_closes() -> None:
    conn = ServerConnection()
    conn.receive_data(CONNECT_12, 0.0)
    conn.events_received()
    conn.reject("bad token")
    assert_error_and_closed(conn, "bad token")
    assert conn.close_reason is CloseReason.REJECTED


def test_accept_refuses_a_user_name_that_cannot_be_sent_raw() -> None:
    conn = ServerConnection()
    conn.receive_data(CONNECT_12, 0.0)
    with pytest.raises(UsageError):
        conn.accept("evil\nheader:x", 0.0)
    assert conn.state is ConnectionState.AUTHENTICATING


def test_frames_pipelined_after_connect_wait_for_accept() -> None:
    conn = ServerConnection()
    conn.receive_data(CONNECT_12 + frame("SUBSCRIBE", ("id", "0"), ("destination", "/d")), 0.0)
    assert [type(e) for e in conn.events_received()] == [ConnectRequested]
    conn.accept("u", 0.0)
    assert [type(e) for e in conn.events_received()] == [Subscribed]


def test_too_many_pipelined_frames() -> None:
    conn = ServerConnection(Limits(max_pending_frames=1))
    send = frame("SEND", ("destination", "/d"))
    conn.receive_data(CONNECT_12 + send + send, 0.0)
    assert_error_and_closed(conn, "before CONNECTED")


def test_illegal_local_moves_raise() -> None:
    conn = ServerConnection()
    with pytest.raises(InvalidState):
        conn.accept("u", 0.0)
    with pytest.raises(InvalidState):
        conn.send_message("0", "/d", "m", body=b"x")
    conn = connected()
    with pytest.raises(InvalidState):
        conn.reject("late")


def test_accept_after_the_peer_failed_meanwhile_is_a_no_op() -> None:
    conn = ServerConnection()
    conn.receive_data(CONNECT_12, 0.0)
    conn.receive_data(b"BOGUS\n\n\x00", 0.0)  # while the caller authenticates
    assert conn.is_closed
    conn.accept("u", 1.0)
    conn.reject("late")
    assert [f.command for f in sent_frames(conn)] == ["ERROR"]


def test_transition_table_has_no_exit_from_closed() -> None:
    assert {t for (s, t) in TRANSITIONS if s is ConnectionState.CLOSED} == {Trigger.TRANSPORT_LOST}


# -- violations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message", "receipt"),
    [
        (frame("SUBSCRIBE", ("destination", "/d"), ("receipt", "r1")), "id", "r1"),
        (frame("SUBSCRIBE", ("id", "1")), "destination", None),
        (frame("SUBSCRIBE", ("id", "1"), ("destination", "/d"), ("ack", "bogus")), "ack", None),
        (frame("UNSUBSCRIBE", ("id", "nope"), ("receipt", "r2")), "unknown subscription", "r2"),
        (frame("UNSUBSCRIBE"), "id", None),
        (frame("SEND", ("receipt", "r3")), "destination", "r3"),
        (frame("BEGIN", ("transaction", "t")), "transactions are not supported", None),
        (frame("COMMIT", ("transaction", "t")), "transactions are not supported", None),
        (frame("ABORT", ("transaction", "t")), "transactions are not supported", None),
        (frame("SEND", ("destination", "/d"), ("transaction", "t")), "transactions", None),
        (frame("ACK", ("id", "404"), ("receipt", "r4")), "unknown ack id", "r4"),
        (frame("ACK", ("message-id", "m")), "id", None),
        (frame("NACK"), "id", None),
        (frame("CONNECT", ("accept-version", "1.2")), "already connected", None),
        (b"HELLO\n\n\x00", "unknown command", None),
        (b"SEND\ndestination:/a\\tb\n\n\x00", "escape", None),
        (b"SEND\nbroken\n\n\x00", "header", None),
    ],
)
def test_violation_gets_error_then_closed(data: bytes, message: str, receipt: str | None) -> None:
    conn = connected()
    conn.receive_data(data, 1.0)
    assert_error_and_closed(conn, message, receipt)
    assert conn.close_reason is CloseReason.PROTOCOL_ERROR


def test_frame_before_connect() -> None:
    conn = ServerConnection()
    conn.receive_data(frame("SEND", ("destination", "/d"), ("receipt", "r")), 0.0)
    assert_error_and_closed(conn, "CONNECT", "r")


def test_bad_heartbeat_header_in_connect() -> None:
    conn = ServerConnection()
    conn.receive_data(frame("CONNECT", ("accept-version", "1.2"), ("heart-beat", "x")), 0.0)
    assert_error_and_closed(conn, "heart-beat")


def test_duplicate_subscription_id() -> None:
    conn = connected()
    sub = frame("SUBSCRIBE", ("id", "0"), ("destination", "/d"))
    conn.receive_data(sub + sub, 0.0)
    assert_error_and_closed(conn, "duplicate")


def test_too_many_subscriptions() -> None:
    conn = connected(Limits(max_subscriptions=2))
    for i in range(3):
        conn.receive_data(frame("SUBSCRIBE", ("id", str(i)), ("destination", "/d")), 0.0)
    assert_error_and_closed(conn, "too many subscriptions")
    assert conn.close_reason is CloseReason.LIMIT_EXCEEDED


def test_oversized_frame_is_a_limit_error() -> None:
    conn = connected(Limits(max_body=10))
    conn.receive_data(b"SEND\ndestination:/d\ncontent-length:11\n\n", 0.0)
    assert_error_and_closed(conn, "body too large")
    assert conn.close_reason is CloseReason.LIMIT_EXCEEDED


def test_valid_frames_before_a_fault_in_the_same_chunk_are_processed() -> None:
    conn = connected()
    conn.receive_data(frame("SEND", ("destination", "/d")) + b"HELLO\n\n\x00", 0.0)
    events = conn.events_received()
    assert isinstance(events[0], SendReceived)
    assert isinstance(events[-1], ConnectionTerminated)
    assert [f.command for f in sent_frames(conn)] == ["ERROR"]


def test_input_after_close_is_ignored() -> None:
    conn = connected()
    conn.receive_data(b"BEGIN\n\n\x00", 0.0)
    conn.events_received()
    conn.data_to_send(0.0)
    conn.receive_data(frame("SEND", ("destination", "/d")), 0.0)
    assert conn.events_received() == []
    assert conn.data_to_send(0.0) == []
    assert conn.send_message("0", "/d", "m") is False
    assert conn.send_receipt("r") is False


# -- normal traffic --------------------------------------------------------------------------


def test_subscribe_unsubscribe_with_receipts() -> None:
    conn = connected()
    conn.receive_data(
        frame(
            "SUBSCRIBE",
            ("id", "s1"),
            ("destination", "/topic/session.7"),
            ("x-resume-after-seq", "41"),
            ("receipt", "r-sub"),
        )
        + frame("UNSUBSCRIBE", ("id", "s1"), ("receipt", "r-unsub")),
        0.0,
    )
    subscribed, unsubscribed = conn.events_received()
    assert isinstance(subscribed, Subscribed)
    assert subscribed.receipt == "r-sub"
    assert subscribed.ack_mode is AckMode.AUTO
    assert subscribed.header("x-resume-after-seq") == "41"
    assert unsubscribed == Unsubscribed("s1", "/topic/session.7")
    # the SUBSCRIBE receipt waits for the caller's authorisation; UNSUBSCRIBE's does not
    receipts = [f.header("receipt-id") for f in sent_frames(conn)]
    assert receipts == ["r-unsub"]
    assert dict(conn.subscriptions) == {}


def test_send_receipt_is_left_to_the_caller() -> None:
    conn = connected()
    conn.receive_data(
        frame("SEND", ("destination", "/app/chat.send"), ("receipt", "42"), body=b'{"a":1}'),
        0.0,
    )
    [event] = conn.events_received()
    assert event == SendReceived(
        "/app/chat.send",
        (("destination", "/app/chat.send"), ("receipt", "42")),
        b'{"a":1}',
        "42",
    )
    assert sent_frames(conn) == []
    assert conn.send_receipt("42")
    [receipt] = sent_frames(conn)
    assert receipt == Frame("RECEIPT", (("receipt-id", "42"),))


def test_disconnect_answers_receipt_then_closes() -> None:
    conn = connected()
    conn.receive_data(frame("DISCONNECT", ("receipt", "bye")), 0.0)
    events = conn.events_received()
    assert events[0] == DisconnectRequested("bye")
    assert events[1] == ConnectionTerminated(CloseReason.DISCONNECT, "client disconnected")
    assert sent_frames(conn) == [Frame("RECEIPT", (("receipt-id", "bye"),))]
    assert conn.close_expected()


def test_heartbeat_eols_become_events_when_connected() -> None:
    conn = connected()
    conn.receive_data(b"\n\r\n", 0.0)
    assert conn.events_received() == [HeartbeatReceived(), HeartbeatReceived()]


def test_message_headers_for_auto_mode() -> None:
    conn = connected()
    conn.receive_data(frame("SUBSCRIBE", ("id", "0"), ("destination", "/user/queue/x")), 0.0)
    conn.events_received()
    assert conn.send_message(
        "0", "/user/queue/x", "m-1", [("content-type", "application/json")], b'{"k":"v"}'
    )
    [message] = sent_frames(conn)
    assert message.command == "MESSAGE"
    assert message.header("subscription") == "0"
    assert message.header("message-id") == "m-1"
    assert message.header("destination") == "/user/queue/x"
    assert message.header("ack") is None
    assert message.header("content-length") == "9"
    assert message.body == b'{"k":"v"}'
    assert conn.send_message("unknown-sub", "/d", "m-2") is False


def test_one_encoding_fans_out_to_many_connections() -> None:
    conns = [connected() for _ in range(3)]
    for i, conn in enumerate(conns):
        mode = "client-individual" if i == 2 else "auto"
        conn.receive_data(
            frame("SUBSCRIBE", ("id", f"sub-{i}"), ("destination", "/t"), ("ack", mode)), 0.0
        )
    encoded = encode_message([("x-event", "message")], b'{"content":"hi"}')
    for i, conn in enumerate(conns):
        assert conn.send_encoded(f"sub-{i}", "/t", "m9", encoded)
        [message] = sent_frames(conn)
        assert message.header("subscription") == f"sub-{i}"
        assert message.body == b'{"content":"hi"}'
        assert (message.header("ack") is not None) == (i == 2)


def subscribe_and_deliver(conn: ServerConnection, mode: str, count: int) -> list[str]:
    conn.receive_data(frame("SUBSCRIBE", ("id", "s"), ("destination", "/q"), ("ack", mode)), 0)
    conn.events_received()
    for n in range(1, count + 1):
        conn.send_message("s", "/q", f"m{n}", body=b"x")
    return [f.header("ack", "") for f in sent_frames(conn)]


def test_client_mode_ack_is_cumulative() -> None:
    conn = connected()
    acks = subscribe_and_deliver(conn, "client", 4)
    conn.receive_data(frame("ACK", ("id", acks[2]), ("receipt", "ra")), 0.0)
    [acked] = conn.events_received()
    assert acked == Acked("s", "/q", acks[2], ("m1", "m2", "m3"))
    assert [f.header("receipt-id") for f in sent_frames(conn)] == ["ra"]
    assert list(conn.subscriptions["s"].unacked.values()) == ["m4"]
    conn.receive_data(frame("ACK", ("id", acks[0])), 0.0)  # already settled
    assert_error_and_closed(conn, "unknown ack id")


def test_client_individual_ack_covers_one_message() -> None:
    conn = connected()
    acks = subscribe_and_deliver(conn, "client-individual", 3)
    conn.receive_data(frame("ACK", ("id", acks[1])) + frame("NACK", ("id", acks[0])), 0.0)
    assert conn.events_received() == [
        Acked("s", "/q", acks[1], ("m2",)),
        Nacked("s", "/q", acks[0], ("m1",)),
    ]
    assert list(conn.subscriptions["s"].unacked.values()) == ["m3"]


def test_stomp_11_acks_by_message_id_and_subscription() -> None:
    conn = connected(connect=frame("CONNECT", ("accept-version", "1.1")))
    subscribe_and_deliver(conn, "client", 2)
    conn.receive_data(frame("ACK", ("message-id", "m2"), ("subscription", "s")), 0.0)
    [acked] = conn.events_received()
    assert isinstance(acked, Acked)
    assert acked.message_ids == ("m1", "m2")


def test_stomp_10_subscription_without_id_uses_destination() -> None:
    conn = connected(connect=frame("CONNECT", ("login", "x")))
    conn.receive_data(frame("SUBSCRIBE", ("destination", "/q")), 0.0)
    conn.receive_data(frame("UNSUBSCRIBE", ("destination", "/q")), 0.0)
    assert conn.events_received() == [
        Subscribed("/q", "/q", AckMode.AUTO, (("destination", "/q"),)),
        Unsubscribed("/q", "/q"),
    ]


def test_unsubscribe_drops_pending_acks() -> None:
    conn = connected()
    acks = subscribe_and_deliver(conn, "client", 1)
    conn.receive_data(frame("UNSUBSCRIBE", ("id", "s")), 0.0)
    conn.receive_data(frame("ACK", ("id", acks[0])), 0.0)
    assert_error_and_closed(conn, "unknown ack id")


def test_unacked_backlog_limit_closes_a_slow_consumer() -> None:
    conn = connected(Limits(max_unacked=2))
    subscribe_and_deliver(conn, "client", 2)
    assert conn.send_message("s", "/q", "m3", body=b"x") is False
    assert_error_and_closed(conn, "unacknowledged")
    assert conn.close_reason is CloseReason.LIMIT_EXCEEDED


def test_send_error_closes() -> None:
    conn = connected()
    conn.send_error("internal failure", b"details")
    error = assert_error_and_closed(conn, "internal failure")
    assert error.body == b"details"
    assert error.header("content-type") == "text/plain"
    assert conn.close_reason is CloseReason.SERVER_ERROR
    conn.send_error("again")  # no-op once closed
    assert conn.data_to_send(0.0) == []


def test_connection_lost_drops_output() -> None:
    conn = connected()
    conn.send_receipt("x")
    conn.connection_lost()
    assert conn.is_closed
    assert conn.data_to_send(0.0) == []


# -- header encoding per negotiated version ------------------------------------------------


def connect_as(version: str) -> bytes:
    return frame("CONNECT", ("accept-version", version), ("heart-beat", "0,0"))


def test_frames_are_unescaped_until_connected_then_as_negotiated() -> None:
    conn = ServerConnection()
    assert conn.wire_version is None
    conn.receive_data(connect_as("1.1"), 0.0)
    conn.events_received()
    assert conn.wire_version is None
    conn.accept("u", 0.0)
    assert conn.wire_version == "1.1"


@pytest.mark.parametrize(
    ("version", "note"), [("1.2", "a:b\\c"), ("1.1", "a:b\\c"), ("1.0", "a\\cb\\\\c")]
)
def test_incoming_headers_follow_the_negotiated_version(version: str, note: str) -> None:
    conn = connected(connect=connect_as(version))
    conn.receive_data(b"SEND\ndestination:/d\nnote:a\\cb\\\\c\n\n\x00", 0.0)
    [send] = conn.events_received()
    assert isinstance(send, SendReceived)
    assert send.header("note") == note


def test_stomp_11_refuses_the_carriage_return_escape() -> None:
    conn = connected(connect=connect_as("1.1"))
    conn.receive_data(b"SEND\ndestination:/d\nreceipt:r\nk:\\r\n\n\x00", 0.0)
    assert_error_and_closed(conn, "escape", "r", version="1.1")


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_outgoing_headers_follow_the_negotiated_version(version: str) -> None:
    conn = connected(connect=connect_as(version))
    conn.receive_data(frame("SUBSCRIBE", ("id", "s"), ("destination", "/q")), 0.0)
    conn.events_received()
    assert conn.send_message("s", "/q", "sess:7", [("x-session-id", "a:b")], b"{}")
    assert conn.send_receipt("rc:1")
    data = b"".join(conn.data_to_send(0.0))
    if version == "1.0":
        assert b"message-id:sess:7\n" in data
        assert b"receipt-id:rc:1\n" in data
    else:
        assert b"message-id:sess\\c7\n" in data
        assert b"receipt-id:rc\\c1\n" in data
    message, receipt = FrameParser(commands=ALL_COMMANDS, version=version).feed(data)
    assert isinstance(message, Frame)
    assert isinstance(receipt, Frame)
    assert message.header("message-id") == "sess:7"
    assert message.header("x-session-id") == "a:b"
    assert receipt.header("receipt-id") == "rc:1"


def test_one_encoding_serves_connections_of_every_version() -> None:
    conns = {v: connected(connect=connect_as(v)) for v in ("1.0", "1.1", "1.2")}
    for conn in conns.values():
        conn.receive_data(frame("SUBSCRIBE", ("id", "s"), ("destination", "/t")), 0.0)
    encoded = encode_message([("x-event", "message"), ("x-session-id", "s:1")], b'{"a":1}')
    for version, conn in conns.items():
        assert conn.send_encoded("s", "/t", "s:1:4", encoded)
        [message] = sent_frames(conn, version=version)
        assert message.header("x-session-id") == "s:1"
        assert message.header("message-id") == "s:1:4"
        assert message.body == b'{"a":1}'
    assert encoded.tail_for("1.1") is encoded.tail_for("1.2")
    assert encoded.tail_for("1.0") != encoded.tail_for("1.2")


def test_a_message_stomp_10_cannot_carry_is_not_sent_to_a_10_connection() -> None:
    old, new = connected(connect=connect_as("1.0")), connected()
    for conn in (old, new):
        conn.receive_data(frame("SUBSCRIBE", ("id", "s"), ("destination", "/t")), 0.0)
    encoded = encode_message([("receipt-id", "line\nbreak")], b"{}")
    assert old.send_encoded("s", "/t", "m1", encoded) is False
    assert old.data_to_send(0.0) == []
    assert not old.is_closed
    assert new.send_encoded("s", "/t", "m1", encoded)
    [message] = sent_frames(new)
    assert message.header("receipt-id") == "line\nbreak"


@pytest.mark.parametrize(("version", "expected"), [("1.2", "a:b"), ("1.0", "a\\cb")])
def test_frames_pipelined_before_connected_are_decoded_with_the_negotiated_version(
    version: str, expected: str
) -> None:
    conn = ServerConnection()
    early = b"SUBSCRIBE\nid:s\ndestination:/d\nnote:a\\cb\n\n\x00"
    conn.receive_data(connect_as(version) + early + b"SEND\ndestination:/d\nk:a\\c", 0.0)
    conn.events_received()
    conn.accept("u", 0.0)
    conn.receive_data(b"b\n\n\x00", 0.0)  # the rest of a frame begun before CONNECTED
    subscribed, send = conn.events_received()
    assert isinstance(subscribed, Subscribed)
    assert isinstance(send, SendReceived)
    assert subscribed.header("note") == expected
    assert send.header("k") == expected


def test_a_pipelined_frame_with_an_undefined_escape_fails_at_accept() -> None:
    conn = ServerConnection()
    bad = b"SEND\ndestination:/d\nreceipt:r\\c1\nk:\\t\n\n\x00"
    conn.receive_data(CONNECT_12 + bad, 0.0)
    assert not conn.is_closed
    conn.events_received()
    conn.accept("u", 0.0)
    [connected_frame, error] = sent_frames(conn)
    assert connected_frame.command == "CONNECTED"
    assert error.command == "ERROR"
    assert "escape" in error.header("message", "")
    assert error.header("receipt-id") == "r:1"
    assert conn.is_closed


def test_errors_before_connected_are_written_unescaped() -> None:
    conn = ServerConnection()
    conn.receive_data(CONNECT_12 + frame("BEGIN", ("receipt", "t:1")), 0.0)
    data = b"".join(conn.data_to_send(0.0))
    assert b"receipt-id:t:1\n" in data


# -- receipt-id on ERROR frames --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"SEND\ndestination:/d\nreceipt:r9\ncontent-length:11\n\n", "body too large"),
        (b"SEND\ndestination:/d\nreceipt:r9\ncontent-length:1\n\nab\x00", "NUL"),
        (b"SEND\nreceipt:r9\nk:\\q\n\n\x00", "escape"),
        (b"SUBSCRIBE\nreceipt:r9\nid:1\nbad line\n\n\x00", "malformed"),
    ],
)
def test_a_frame_that_fails_to_parse_gets_its_receipt_id_back(data: bytes, message: str) -> None:
    conn = connected(Limits(max_body=10))
    conn.receive_data(data, 0.0)
    assert_error_and_closed(conn, message, "r9")


def test_an_escaped_receipt_comes_back_escaped() -> None:
    conn = connected()
    conn.receive_data(b"SEND\nreceipt:a\\cb\\nc\n\n\x00", 0.0)  # no destination
    data = b"".join(conn.data_to_send(0.0))
    assert b"receipt-id:a\\cb\\nc\n" in data


def test_send_error_can_answer_a_receipt() -> None:
    conn = connected()
    conn.send_error("not a participant of this session", receipt_id="sub-r")
    assert_error_and_closed(conn, "not a participant", "sub-r")


def test_send_error_names_the_type_of_its_body() -> None:
    conn = connected()
    conn.send_error("refused", b'{"code":"X"}', receipt_id="r", content_type="application/json")
    error = assert_error_and_closed(conn, "refused", "r")
    assert error.header("content-type") == "application/json"
    assert error.body == b'{"code":"X"}'


def test_reject_carries_the_receipt_of_the_connect() -> None:
    conn = ServerConnection()
    conn.receive_data(frame("CONNECT", ("accept-version", "1.2"), ("receipt", "c-1")), 0.0)
    conn.events_received()
    conn.reject("bad token")
    assert_error_and_closed(conn, "bad token", "c-1", version=None)


def test_error_messages_stay_on_one_line_and_unencodable_receipts_are_left_out() -> None:
    conn = connected(connect=connect_as("1.0"))
    conn.send_error("first\r\nsecond\nthird", receipt_id="no\nway")
    error = assert_error_and_closed(conn, "first second third", None, version="1.0")
    assert error.header("message") == "first second third"


# -- heart-beats with an injected clock ------------------------------------------------------


def heartbeating(client: str = "4000,3000") -> ServerConnection:
    conn = ServerConnection(heartbeat=(5000, 2000))
    conn.receive_data(frame("CONNECT", ("accept-version", "1.2"), ("heart-beat", client)), 0.0)
    conn.events_received()
    conn.accept("u", 100.0)
    conn.data_to_send(100.0)
    return conn


def test_server_sends_heartbeats_when_idle() -> None:
    conn = heartbeating()  # send every max(5000, 3000) = 5 s
    conn.check_heartbeats(104.9)
    assert conn.data_to_send(104.9) == []
    assert conn.next_deadline(104.9) == 105.0
    conn.check_heartbeats(105.0)
    conn.check_heartbeats(105.0)  # not queued twice
    assert conn.data_to_send(105.0) == [b"\n"]
    assert conn.next_deadline(105.0) == 108.0  # peer deadline: 100 + 4 s * 2


def test_outgoing_traffic_postpones_the_heartbeat() -> None:
    conn = heartbeating()
    conn.send_receipt("r")
    conn.data_to_send(103.0)
    conn.receive_data(b"\n", 104.0)  # keep the peer alive past 108
    conn.check_heartbeats(107.0)
    assert conn.data_to_send(107.0) == []
    conn.check_heartbeats(108.0)
    assert conn.data_to_send(108.0) == [b"\n"]


def test_silent_peer_times_out() -> None:
    conn = heartbeating()  # expect every max(4000, 2000) = 4 s, grace 2 -> 8 s
    conn.receive_data(b"\n", 103.0)
    conn.data_to_send(103.0)
    conn.check_heartbeats(110.9)
    assert not conn.is_closed
    conn.check_heartbeats(111.0)
    events: list[Event] = conn.events_received()
    assert events[-1] == ConnectionTerminated(CloseReason.HEARTBEAT_TIMEOUT, "heart-beat timeout")
    assert conn.close_reason is CloseReason.HEARTBEAT_TIMEOUT
    assert conn.next_deadline(111.0) is None


def test_no_heartbeats_when_client_asks_for_none() -> None:
    conn = heartbeating("0,0")
    assert conn.next_deadline(100.0) is None
    conn.check_heartbeats(1e6)
    assert not conn.is_closed
    assert conn.data_to_send(1e6) == []


# -- property: whatever the peer sends, the core never raises --------------------------------

CLIENT_SEEDS = [
    frame("SUBSCRIBE", ("id", "1"), ("destination", "/d"), ("ack", "client"), ("receipt", "r")),
    frame("UNSUBSCRIBE", ("id", "1")),
    frame("SEND", ("destination", "/d"), body=b"{}"),
    frame("ACK", ("id", "1")),
    frame("NACK", ("id", "2")),
    frame("DISCONNECT", ("receipt", "z")),
    b"\n",
]


@given(st.lists(st.sampled_from(CLIENT_SEEDS), max_size=8), st.binary(max_size=40))
def test_receive_data_never_raises(frames: list[bytes], junk: bytes) -> None:
    conn = connected(Limits(max_subscriptions=2, max_unacked=3))
    for data in frames:
        conn.receive_data(data, 1.0)
        if "1" in conn.subscriptions:
            conn.send_message("1", "/d", "m", body=b"x")
    conn.receive_data(junk, 2.0)
    out = sent_frames(conn)
    if conn.is_closed and conn.close_reason is not CloseReason.DISCONNECT:
        assert out[-1].command == "ERROR"
