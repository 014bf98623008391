"""What one benchmark run's raw records add up to (pure: no I/O, no clock).

The generator (``bench/gen/gen.mjs``) reports, in ms from the run's start, every send (its
session, number, *scheduled* time, and when it was acknowledged, -1 if it failed, None if it
never was) and every delivery (the receiver, the message's session and number, its place in the
session's order as the system assigned it, and when it arrived).

Outcomes are counted the way Jepsen's queue checker does: ``lost`` (acknowledged, never
delivered to one of its session's receivers), ``duplicated`` (delivered twice to one receiver),
``unexpected`` (delivered, never acknowledged), ``out_of_order`` (delivered before something of
its session the same receiver already had later in the order). Latency runs from each message's
scheduled send time to each delivery, so a system that falls behind shows its queueing in full
(no coordinated omission). Latency and throughput count the measured window only, after the
warm-up; the loss accounting counts every message of the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RECEIVERS_PER_SESSION = 2


@dataclass(frozen=True)
class Window:
    """The measured window, in ms from the run's start."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / 1000

    def holds(self, at: float) -> bool:
        return self.start <= at < self.end


@dataclass
class Outcome:
    offered_rate: float
    window_seconds: float
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    unanswered: int = 0
    delivered: int = 0
    delivered_in_window: int = 0
    duplicated: int = 0
    unexpected: int = 0
    out_of_order: int = 0
    lost: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ack_latencies_ms: list[float] = field(default_factory=list)

    @property
    def delivered_rate(self) -> float:
        """Messages per second that reached their receivers within the window."""
        if not self.window_seconds:
            return 0.0
        return self.delivered_in_window / RECEIVERS_PER_SESSION / self.window_seconds

    @property
    def delivered_messages_in_window(self) -> float:
        return self.delivered_in_window / RECEIVERS_PER_SESSION

    def summary(self) -> dict[str, Any]:
        return {
            "offered_rate": self.offered_rate,
            "window_seconds": round(self.window_seconds, 3),
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "unanswered": self.unanswered,
            "delivered": self.delivered,
            "delivered_msgs_per_s": round(self.delivered_rate, 1),
            "duplicated": self.duplicated,
            "unexpected": self.unexpected,
            "out_of_order": self.out_of_order,
            "lost": self.lost,
            "p50_ms": rounded(percentile(self.latencies_ms, 50)),
            "p95_ms": rounded(percentile(self.latencies_ms, 95)),
            "p99_ms": rounded(percentile(self.latencies_ms, 99)),
            "max_ms": rounded(max(self.latencies_ms, default=math.nan)),
            "ack_p50_ms": rounded(percentile(self.ack_latencies_ms, 50)),
            "ack_p99_ms": rounded(percentile(self.ack_latencies_ms, 99)),
        }


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile ``p`` (0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)


def account(
    sends: Mapping[str, Sequence[Any]],
    deliveries: Mapping[str, Sequence[Any]],
    receivers_of: Mapping[int, Iterable[int]],
    *,
    rate: float,
    window: Window,
) -> Outcome:
    """The outcome of one run. ``sends``: columns ``s``, ``n``, ``sched``, ``ack``;
    ``deliveries``: columns ``r``, ``s``, ``n``, ``order``, ``at``; ``receivers_of``: the
    receivers of each session."""
    outcome = Outcome(rate, window.seconds)
    scheduled: dict[tuple[int, int], float] = {}
    acked: set[tuple[int, int]] = set()
    for session, number, sched, ack in zip(
        sends["s"], sends["n"], sends["sched"], sends["ack"], strict=True
    ):
        key = (int(session), int(number))
        scheduled[key] = float(sched)
        outcome.sent += 1
        if ack is None:
            outcome.unanswered += 1
        elif ack < 0:
            outcome.failed += 1
        else:
            outcome.acknowledged += 1
            acked.add(key)
            if window.holds(sched):
                outcome.ack_latencies_ms.append(float(ack) - float(sched))
    seen: dict[int, set[tuple[int, int]]] = {}
    last: dict[tuple[int, int], int] = {}  # (receiver, session) -> order of the last one
    for receiver, session, number, order, at in zip(
        deliveries["r"],
        deliveries["s"],
        deliveries["n"],
        deliveries["order"],
        deliveries["at"],
        strict=True,
    ):
        key = (int(session), int(number))
        got = seen.setdefault(int(receiver), set())
        if key in got:
            outcome.duplicated += 1
            continue
        got.add(key)
        place = (int(receiver), int(session))
        if order < last.get(place, -1):
            outcome.out_of_order += 1
        last[place] = int(order)
        outcome.delivered += 1
        if window.holds(at):
            outcome.delivered_in_window += 1
        sched = scheduled.get(key)
        if sched is not None and window.holds(sched):
            outcome.latencies_ms.append(float(at) - sched)
    for session, number in acked:
        for receiver in receivers_of.get(session, ()):
            if (session, number) not in seen.get(receiver, set()):
                outcome.lost += 1
    delivered_keys: set[tuple[int, int]] = set().union(*seen.values()) if seen else set()
    outcome.unexpected = len(delivered_keys - acked)
    return outcome


def keeps_up(row: Mapping[str, Any], *, max_p99_ms: float = 500.0) -> bool:
    """A sustained rate: nothing lost, failed or left unanswered, at least 95 % of the offered
    rate delivered within the window, and p99 (from the scheduled send time) under
    ``max_p99_ms``, so a queue that grows all through the run does not pass."""
    p99 = row.get("p99_ms")
    return (
        row["lost"] == 0
        and row["failed"] == 0
        and row["unanswered"] == 0
        and row["delivered_msgs_per_s"] >= 0.95 * row["offered_rate"]
        and p99 is not None
        and p99 <= max_p99_ms
    )
