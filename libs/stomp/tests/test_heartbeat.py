"""Heart-beat negotiation table and the monitor's timing under an injected clock."""

from __future__ import annotations

import pytest
from chat_stomp.exceptions import ProtocolError
from chat_stomp.heartbeat import HeartbeatMonitor, negotiate, parse_heartbeat


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        ((0, 0), (10_000, 10_000), (0, 0)),  # client wants nothing, sends nothing
        ((0, 5_000), (10_000, 10_000), (10_000, 0)),  # we send at max(sx, cy)
        ((5_000, 0), (10_000, 10_000), (0, 10_000)),  # we expect at max(cx, sy)
        ((20_000, 30_000), (10_000, 10_000), (30_000, 20_000)),
        ((4_000, 4_000), (10_000, 0), (10_000, 0)),  # server wants nothing
        ((4_000, 4_000), (0, 10_000), (0, 10_000)),  # server cannot send
        ((4_000, 4_000), (0, 0), (0, 0)),
        ((1, 1), (1, 1), (1, 1)),
    ],
)
def test_negotiation_table(
    client: tuple[int, int], server: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert negotiate(*client, *server) == expected


def test_negative_values_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        negotiate(-1, 0, 0, 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, (0, 0)), ("0,0", (0, 0)), ("10000,5000", (10_000, 5_000)), (" 1 , 2 ", (1, 2))],
)
def test_parse_header(value: str | None, expected: tuple[int, int]) -> None:
    assert parse_heartbeat(value) == expected


@pytest.mark.parametrize("value", ["", "1", "1,2,3", "a,b", "-1,0", "1.5,0", "99999999999,0"])
def test_parse_bad_header(value: str) -> None:
    with pytest.raises(ProtocolError, match="heart-beat"):
        parse_heartbeat(value)


def test_send_schedule_follows_last_write() -> None:
    monitor = HeartbeatMonitor(10.0, 0.0, now=100.0)
    assert not monitor.need_to_send(109.9)
    assert monitor.need_to_send(110.0)
    monitor.on_data_sent(110.0)
    assert not monitor.need_to_send(115.0)
    monitor.on_data_sent(115.0)  # real traffic postpones the heart-beat
    assert not monitor.need_to_send(124.9)
    assert monitor.need_to_send(125.0)
    assert monitor.next_deadline(116.0) == 125.0


def test_peer_timeout_uses_the_grace_factor() -> None:
    monitor = HeartbeatMonitor(0.0, 5.0, grace_factor=2.0, now=0.0)
    assert not monitor.peer_timed_out(9.9)
    monitor.on_data_received(9.0)
    assert not monitor.peer_timed_out(18.9)
    assert monitor.peer_timed_out(19.0)
    assert monitor.next_deadline(1.0) == 19.0


def test_next_deadline_is_the_earliest_and_never_in_the_past() -> None:
    monitor = HeartbeatMonitor(10.0, 4.0, now=0.0)  # send at 10, peer deadline at 8
    assert monitor.next_deadline(0.0) == 8.0
    assert monitor.next_deadline(50.0) == 50.0


def test_no_heartbeats_no_deadline() -> None:
    monitor = HeartbeatMonitor(0.0, 0.0, now=0.0)
    assert monitor.next_deadline(0.0) is None
    assert not monitor.need_to_send(1e9)
    assert not monitor.peer_timed_out(1e9)


def test_clock_going_backwards_does_not_rewind() -> None:
    monitor = HeartbeatMonitor(10.0, 10.0, now=50.0)
    monitor.on_data_sent(40.0)
    monitor.on_data_received(40.0)
    assert monitor.next_deadline(0.0) == 60.0


@pytest.mark.parametrize(
    ("args", "match"), [((-1.0, 0.0, 2.0), "negative"), ((1.0, 1.0, 0.5), "grace")]
)
def test_bad_monitor_arguments(args: tuple[float, float, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HeartbeatMonitor(*args, now=0.0)
