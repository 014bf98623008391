"""Pacing: no window at light load, a window that gathers about a target batch under load."""

from __future__ import annotations

import pytest

from chat_common.batching import Pacing, PacingPolicy

POLICY = PacingPolicy(max_window=0.020, target_batch=16, busy_rate=250.0, horizon=0.1)


def steady(pacing: Pacing, rate: float, seconds: float, start: float = 0.0) -> float:
    """Items arriving one at a time at ``rate`` for ``seconds``; the time of the last one."""
    now = start
    for i in range(int(rate * seconds)):
        now = start + i / rate
        pacing.arrived(now)
    return now


def test_light_load_never_waits() -> None:
    pacing = Pacing(POLICY)
    assert pacing.window(0.0) == 0.0  # nothing ever arrived
    now = steady(pacing, 100.0, 2.0)
    assert pacing.rate(now) == pytest.approx(100.0, rel=0.1)
    assert pacing.window(now) == 0.0


def test_the_window_gathers_the_target_batch_and_is_capped() -> None:
    pacing = Pacing(POLICY)
    now = steady(pacing, 2_000.0, 1.0)
    assert pacing.window(now) == pytest.approx(16 / 2_000, rel=0.1)  # 8 ms: 16 per batch
    pacing = Pacing(POLICY)
    now = steady(pacing, 500.0, 1.0)
    assert pacing.window(now) == 0.020  # 32 ms would be needed: capped


def test_a_quiet_spell_switches_the_window_off() -> None:
    pacing = Pacing(POLICY)
    now = steady(pacing, 1_000.0, 1.0)
    assert pacing.window(now) > 0
    assert pacing.window(now + 0.5) == 0.0  # five horizons later


def test_items_counted_in_bulk() -> None:
    pacing = Pacing(POLICY)
    pacing.arrived(0.0, 100)  # one round of 100 rows
    assert pacing.rate(0.0) == pytest.approx(1_000.0)
    assert pacing.window(0.0) == pytest.approx(0.016)


def test_a_zero_cap_never_gathers() -> None:
    pacing = Pacing(PacingPolicy(max_window=0.0))
    pacing.arrived(0.0, 10_000)
    assert pacing.window(0.0) == 0.0


@pytest.mark.parametrize(
    "fields",
    [{"max_window": -1.0}, {"target_batch": 0}, {"busy_rate": 0.0}, {"horizon": 0.0}],
)
def test_bad_policies_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        PacingPolicy(**fields)  # type: ignore[arg-type]
