"""The seam between replayed history and live events (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ws_edge.resume import ResumeOverflow, SeqGate


def test_live_events_wait_for_the_replay_and_lose_their_duplicates() -> None:
    gate: SeqGate[str] = SeqGate(after_seq=3)
    assert gate.live(5, "live5") == []  # held during the replay
    assert gate.live(None, "typing") == []
    assert gate.live(6, "live6") == []
    replayed = [seq for seq in (4, 5) if gate.admit(seq)]
    assert replayed == [4, 5]
    assert gate.finish() == ["typing", "live6"]  # 5 came with the replay
    assert gate.live(6, "again") == []  # never twice
    assert gate.live(7, "live7") == ["live7"]


def test_a_gate_without_resume_passes_live_events() -> None:
    gate: SeqGate[str] = SeqGate(after_seq=None)
    assert not gate.replaying
    assert gate.live(1, "a") == ["a"]


def test_overflow_during_replay() -> None:
    gate: SeqGate[int] = SeqGate(after_seq=0, max_buffer=2)
    gate.live(1, 1)
    gate.live(2, 2)
    with pytest.raises(ResumeOverflow):
        gate.live(3, 3)


@given(
    after=st.integers(0, 20),
    stored=st.integers(0, 40),
    live_from=st.integers(1, 45),
    live_to=st.integers(1, 60),
    switch=st.integers(0, 60),
)
def test_every_seq_above_the_resume_point_once_in_order(
    after: int, stored: int, live_from: int, live_to: int, switch: int
) -> None:
    """History holds 1..stored; live events carry live_from..live_to, some arriving during
    the replay (before ``switch`` replayed items) and the rest after it."""
    gate: SeqGate[int] = SeqGate(after_seq=after)
    out: list[int] = []
    live = list(range(live_from, live_to + 1))
    during, later = live[:switch], live[switch:]
    for seq in during:
        out += gate.live(seq, seq)
    out += [seq for seq in range(after + 1, stored + 1) if gate.admit(seq)]
    out += gate.finish()
    for seq in later:
        out += gate.live(seq, seq)
    assert out == sorted(set(out))  # in order, no duplicates
    expected = set(range(after + 1, stored + 1)) | {s for s in live if s > after}
    # everything the replay or the live stream carried above the resume point, minus what an
    # in-order stream has to drop (a live seq at or below one already delivered)
    assert set(out) <= expected
    assert set(range(after + 1, stored + 1)) <= set(out)
