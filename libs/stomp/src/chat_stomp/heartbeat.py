"""STOMP heart-beats: negotiation (pure arithmetic) and a clock-free monitor.

The client's CONNECT says ``heart-beat:cx,cy`` (it can send every cx ms; it wants to hear from
us every cy ms) and the server's CONNECTED says ``heart-beat:sx,sy``. Zero means "cannot" or
"do not want". The server then sends at least every ``max(sx, cy)`` ms unless either is zero,
and expects data at least every ``max(cx, sy)`` ms unless either is zero.
"""

from __future__ import annotations

from .exceptions import ProtocolError

_MAX_MS = 24 * 60 * 60 * 1000  # anything longer than a day is treated as a malformed header


def parse_heartbeat(value: str | None) -> tuple[int, int]:
    """Parse a ``heart-beat`` header value ``"x,y"``; absent means ``(0, 0)``."""
    if value is None:
        return 0, 0
    parts = value.split(",")
    if len(parts) != 2:
        raise ProtocolError("invalid heart-beat header")
    numbers: list[int] = []
    for part in parts:
        part = part.strip()
        if not (part.isascii() and part.isdigit()) or len(part) > 9 or int(part) > _MAX_MS:
            raise ProtocolError("invalid heart-beat header")
        numbers.append(int(part))
    return numbers[0], numbers[1]


def negotiate(client_cx: int, client_cy: int, server_sx: int, server_sy: int) -> tuple[int, int]:
    """Return ``(send_every_ms, expect_every_ms)`` for the server side; 0 means none."""
    if min(client_cx, client_cy, server_sx, server_sy) < 0:
        raise ValueError("heart-beat values cannot be negative")
    send = 0 if server_sx == 0 or client_cy == 0 else max(server_sx, client_cy)
    expect = 0 if client_cx == 0 or server_sy == 0 else max(client_cx, server_sy)
    return send, expect


class HeartbeatMonitor:
    """Tracks when we last sent and received data; times are seconds from the caller's clock.

    ``send_interval`` / ``expect_interval`` are in seconds, 0 meaning "none". The peer counts as
    gone once nothing arrived for ``expect_interval * grace_factor`` (networks jitter; the spec
    leaves the tolerance to the implementation).
    """

    def __init__(
        self,
        send_interval: float,
        expect_interval: float,
        grace_factor: float = 2.0,
        *,
        now: float,
    ) -> None:
        if send_interval < 0 or expect_interval < 0:
            raise ValueError("intervals cannot be negative")
        if grace_factor < 1.0:
            raise ValueError("grace_factor must be at least 1")
        self.send_interval = send_interval
        self.expect_interval = expect_interval
        self.grace_factor = grace_factor
        self._last_sent = now
        self._last_received = now

    @property
    def timeout(self) -> float:
        """Silence (seconds) after which the peer is considered gone; 0 if never."""
        return self.expect_interval * self.grace_factor

    def on_data_received(self, now: float) -> None:
        self._last_received = max(self._last_received, now)

    def on_data_sent(self, now: float) -> None:
        self._last_sent = max(self._last_sent, now)

    def need_to_send(self, now: float) -> bool:
        """True when a heart-beat must go out now to keep our promise."""
        return self.send_interval > 0 and now - self._last_sent >= self.send_interval

    def peer_timed_out(self, now: float) -> bool:
        return self.expect_interval > 0 and now - self._last_received >= self.timeout

    def next_deadline(self, now: float) -> float | None:
        """When to check again (never before ``now``); None if heart-beats are off both ways."""
        deadlines: list[float] = []
        if self.send_interval > 0:
            deadlines.append(self._last_sent + self.send_interval)
        if self.expect_interval > 0:
            deadlines.append(self._last_received + self.timeout)
        if not deadlines:
            return None
        return max(now, min(deadlines))
