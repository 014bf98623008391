"""Counting a run's raw records: Jepsen's outcomes, latency from the scheduled send time, the
measured window, and the rule for a sustained rate."""

from __future__ import annotations

from typing import Any

import accounting
from accounting import Window, account, keeps_up

RECEIVERS = {0: [0, 1], 1: [2, 3]}
WHOLE = Window(0, 10_000)


def sends(*rows: tuple[int, int, float, float | None]) -> dict[str, list[Any]]:
    return {
        "s": [r[0] for r in rows],
        "n": [r[1] for r in rows],
        "sched": [r[2] for r in rows],
        "ack": [r[3] for r in rows],
    }


def deliveries(*rows: tuple[int, int, int, int, float]) -> dict[str, list[Any]]:
    keys = ("r", "s", "n", "order", "at")
    return {k: [r[i] for r in rows] for i, k in enumerate(keys)}


def test_a_clean_run_counts_nothing_bad_and_measures_from_the_schedule() -> None:
    outcome = account(
        sends((0, 0, 0.0, 5.0), (1, 1, 10.0, 14.0)),
        deliveries((0, 0, 0, 1, 7.0), (1, 0, 0, 1, 8.0), (2, 1, 1, 1, 15.0), (3, 1, 1, 1, 30.0)),
        RECEIVERS,
        rate=100,
        window=WHOLE,
    )
    summary = outcome.summary()
    assert (summary["lost"], summary["duplicated"], summary["unexpected"]) == (0, 0, 0)
    assert summary["out_of_order"] == 0
    assert sorted(outcome.latencies_ms) == [5.0, 7.0, 8.0, 20.0]
    assert outcome.ack_latencies_ms == [5.0, 4.0]
    assert summary["acknowledged"] == 2


def test_lost_duplicated_unexpected_and_out_of_order() -> None:
    outcome = account(
        sends((0, 0, 0.0, 1.0), (0, 2, 20.0, 21.0), (0, 3, 30.0, None), (1, 1, 10.0, -1)),
        deliveries(
            (0, 0, 0, 1, 5.0),
            (0, 0, 0, 1, 6.0),  # again: duplicated
            (0, 0, 2, 3, 25.0),
            (1, 0, 2, 3, 26.0),
            (1, 0, 0, 1, 27.0),  # after seq 3 on the same receiver: out of order
            (0, 0, 3, 4, 35.0),  # never acknowledged (unanswered): unexpected
            (2, 1, 1, 1, 15.0),  # failed send, delivered anyway: unexpected
        ),
        RECEIVERS,
        rate=100,
        window=WHOLE,
    )
    assert outcome.duplicated == 1
    assert outcome.out_of_order == 1
    assert outcome.unexpected == 2
    assert outcome.lost == 0  # both acknowledged messages reached both receivers
    assert (outcome.failed, outcome.unanswered, outcome.acknowledged) == (1, 1, 2)


def test_an_acknowledged_message_missing_at_one_receiver_is_lost_once() -> None:
    outcome = account(
        sends((0, 0, 0.0, 1.0)), deliveries((0, 0, 0, 1, 2.0)), RECEIVERS, rate=1, window=WHOLE
    )
    assert outcome.lost == 1


def test_only_the_window_counts_for_latency_and_throughput() -> None:
    window = Window(1000, 2000)
    outcome = account(
        sends((0, 0, 500.0, 501.0), (0, 1, 1500.0, 1501.0)),
        deliveries(
            (0, 0, 0, 1, 1100.0),  # warm-up message, delivered in the window
            (1, 0, 0, 1, 1100.0),
            (0, 0, 1, 2, 1600.0),
            (1, 0, 1, 2, 2100.0),  # after the window
        ),
        RECEIVERS,
        rate=2,
        window=window,
    )
    assert outcome.latencies_ms == [100.0, 600.0]  # the windowed message only
    assert outcome.delivered_in_window == 3
    assert outcome.delivered_rate == 1.5  # 3 deliveries / 2 receivers / 1 s


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "offered_rate": 100.0,
        "delivered_msgs_per_s": 99.0,
        "lost": 0,
        "failed": 0,
        "unanswered": 0,
        "p99_ms": 40.0,
    }
    return {**base, **changes}


def test_a_rate_is_sustained_only_when_nothing_is_lost_and_no_queue_grows() -> None:
    assert keeps_up(row())
    assert not keeps_up(row(lost=1))
    assert not keeps_up(row(failed=2))
    assert not keeps_up(row(unanswered=1))
    assert not keeps_up(row(delivered_msgs_per_s=90.0))
    assert not keeps_up(row(p99_ms=600.0))
    assert not keeps_up(row(p99_ms=None))


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert accounting.percentile(values, 50) == 51.0
    assert accounting.percentile(values, 99) == 100.0
    assert accounting.percentile([], 99) != accounting.percentile([], 99)  # NaN
