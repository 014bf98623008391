"""The search for the highest sustained rate."""

from __future__ import annotations

from typing import Any

from sweep import next_rate, projected


def ok(rate: float) -> dict[str, Any]:
    return {
        "offered_rate": rate,
        "delivered_msgs_per_s": rate,
        "lost": 0,
        "failed": 0,
        "unanswered": 0,
        "p99_ms": 10.0,
    }


def behind(rate: float) -> dict[str, Any]:
    return {**ok(rate), "delivered_msgs_per_s": rate / 2}


def search(rows: dict[float, dict[str, Any]]) -> float | None:
    return next_rate(rows, growth=1.5, precision=1.25, ceiling=10_000)


def test_goes_up_from_the_highest_sustained_always_measured_rate() -> None:
    assert search({100: ok(100), 500: ok(500)}) == 750


def test_narrows_a_bracket_geometrically_until_it_is_tight() -> None:
    assert search({100: ok(100), 500: behind(500)}) == 220  # sqrt(100 * 500), two figures
    assert search({100: ok(100), 220: ok(220), 500: behind(500)}) == 330
    assert search({100: ok(100), 400: ok(400), 480: behind(480)}) is None  # within 1.25x


def test_stops_when_nothing_is_sustained_or_at_the_ceiling() -> None:
    assert search({100: behind(100)}) is None
    assert next_rate({9000: ok(9000)}, growth=1.5, precision=1.25, ceiling=10_000) is None


def test_projected_capacity_uses_three_quarters_of_the_cores() -> None:
    import sweep

    assert projected(1000.0, 1000) == round(0.75 * sweep.CORES * 1000 / 1.0)
    assert projected(0.0, 100) is None
    assert projected(10.0, 0) is None
