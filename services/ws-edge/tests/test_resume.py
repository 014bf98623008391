"""The seq order of a topic subscription (pure): the replay seam, gaps fetched from history,
duplicates dropped, the resume point read."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ws_edge.resume import MAX_SEQ, Fetch, ResumeOverflow, SeqGate, resume_point


def fetched(gate: SeqGate[str], fetch: Fetch, stored: range) -> list[str]:
    """Serve ``fetch`` from history holding ``stored``: what the fetch delivers."""
    top = stored.stop - 1 if fetch.up_to is None else fetch.up_to
    return [f"h{seq}" for seq in stored if fetch.after < seq <= top and gate.admit(seq)]


# -- the replay seam -------------------------------------------------------------------------


def test_live_events_wait_for_the_replay_and_lose_their_duplicates() -> None:
    gate: SeqGate[str] = SeqGate(after_seq=3)
    assert gate.take_fetch() == Fetch(3, None)
    assert gate.take_fetch() is None  # asked once
    assert gate.live(5, "live5") == []  # held during the replay
    assert gate.live(None, "typing") == []
    assert gate.live(6, "live6") == []
    replayed = [seq for seq in (4, 5) if gate.admit(seq)]
    assert replayed == [4, 5]
    assert gate.finish() == ["typing", "live6"]  # 5 came with the replay
    assert gate.take_fetch() is None
    assert gate.live(6, "again") == []  # never twice
    assert gate.live(7, "live7") == ["live7"]


def test_a_gate_without_resume_starts_at_the_first_message() -> None:
    gate: SeqGate[str] = SeqGate(after_seq=None)
    assert gate.fetching is None
    assert gate.take_fetch() is None
    assert gate.live(None, "typing") == ["typing"]
    assert gate.live(7, "m7") == ["m7"]
    assert gate.last_seq == 7
    assert gate.live(6, "m6") == []  # below the first one delivered
    assert gate.live(8, "m8") == ["m8"]


def test_overflow_while_fetching() -> None:
    gate: SeqGate[int] = SeqGate(after_seq=0, max_buffer=2)
    gate.live(1, 1)
    gate.live(2, 2)
    with pytest.raises(ResumeOverflow):
        gate.live(3, 3)


# -- gaps ------------------------------------------------------------------------------------


def test_a_gap_is_fetched_and_the_live_events_meanwhile_are_held() -> None:
    gate: SeqGate[str] = SeqGate(after_seq=None)
    assert gate.live(1, "m1") == ["m1"]
    assert gate.live(4, "m4") == []  # 2 and 3 missing
    assert gate.take_fetch() == Fetch(1, 3)
    assert gate.live(None, "typing") == []  # waits with the rest
    assert gate.live(5, "m5") == []
    assert fetched(gate, Fetch(1, 3), range(1, 6)) == ["h2", "h3"]
    assert gate.complete
    assert gate.finish() == ["m4", "typing", "m5"]
    assert gate.take_fetch() is None
    assert gate.held == 0


def test_a_late_row_and_its_republished_successor_reach_the_client_once_in_order() -> None:
    """The relay's N+1 reaches the edge before N (nacked, republished), then N+1 again."""
    gate: SeqGate[str] = SeqGate(after_seq=None)
    assert gate.live(1, "m1") == ["m1"]
    assert gate.live(3, "m3") == []
    fetch = gate.take_fetch()
    assert fetch == Fetch(1, 2)
    assert gate.live(2, "m2 live") == []
    assert gate.live(3, "m3 again") == []
    assert fetched(gate, fetch, range(1, 4)) == ["h2"]
    assert gate.finish() == ["m3"]  # 2 came from history, the copies are dropped
    assert gate.live(3, "m3 once more") == []
    assert gate.live(4, "m4") == ["m4"]


def test_a_fetch_only_admits_its_range() -> None:
    gate: SeqGate[str] = SeqGate(after_seq=None)
    gate.live(1, "m1")
    gate.live(3, "m3")
    assert not gate.complete
    assert not gate.admit(3)  # the live copy is held: it goes out at finish
    assert gate.admit(2)
    assert gate.complete


def test_held_messages_beyond_another_gap_open_the_next_fetch() -> None:
    gate: SeqGate[str] = SeqGate(after_seq=None)
    gate.live(1, "m1")
    gate.live(3, "m3")
    assert gate.take_fetch() == Fetch(1, 2)
    gate.live(6, "m6")
    gate.live(None, "typing")
    gate.live(4, "m4")
    assert fetched(gate, Fetch(1, 2), range(1, 7)) == ["h2"]
    # the messages in seq order (events without a seq keep their place); 5 is missing
    assert gate.finish() == ["m3", "m4", "typing"]
    assert gate.take_fetch() == Fetch(4, 5)
    assert gate.held == 1
    assert fetched(gate, Fetch(4, 5), range(1, 7)) == ["h5"]
    assert gate.finish() == ["m6"]


def test_giving_up_delivers_what_there_is() -> None:
    gate: SeqGate[str] = SeqGate(after_seq=None)
    gate.live(1, "m1")
    gate.live(5, "m5")
    assert gate.take_fetch() == Fetch(1, 4)
    gate.live(3, "m3")
    assert gate.admit(2)  # history gave 2, then failed
    assert not gate.complete
    assert gate.give_up() == ["m3"]  # 4 is still missing: a fetch of its own
    assert gate.take_fetch() == Fetch(3, 4)
    assert gate.give_up() == ["m5"]
    assert gate.take_fetch() is None
    assert gate.last_seq == 5
    assert gate.live(4, "m4 late") == []


def test_giving_up_with_nothing_fetched_skips_to_the_first_held_message() -> None:
    gate: SeqGate[str] = SeqGate(after_seq=None)
    gate.live(10, "m10")
    gate.live(14, "m14")
    gate.live(12, "m12")
    gate.live(9, "m9 late")  # below the mark: a duplicate
    assert gate.take_fetch() == Fetch(10, 13)
    assert gate.give_up() == ["m12"]  # 11 skipped; 13 is a new gap before 14
    assert gate.take_fetch() == Fetch(12, 13)
    assert gate.give_up() == ["m14"]
    assert gate.held == 0


def test_a_failed_replay_still_ends() -> None:
    gate: SeqGate[str] = SeqGate(after_seq=3)
    gate.live(4, "m4")
    assert gate.give_up() == ["m4"]


# -- the resume point ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seq"),
    [
        ("0", 0),
        ("42", 42),
        ("007", 7),
        (str(MAX_SEQ), MAX_SEQ),
        (str(MAX_SEQ + 1), None),
        ("9" * 5000, None),  # int() itself would refuse it
        ("", None),
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1.0", None),
        ("²", None),  # str.isdigit() says yes, int() says no
        ("١٢", None),  # Arabic-Indic digits: int() would read them as 12
        ("\uff11", None),  # fullwidth one
    ],
)
def test_the_resume_point_is_a_plain_ascii_number(text: str, seq: int | None) -> None:
    assert resume_point(text) == seq


# -- properties ------------------------------------------------------------------------------


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
    """History holds 1..stored when the replay reads it; live events carry
    live_from..live_to, some arriving during the replay (before ``switch`` replayed items)
    and the rest after it; every live message is stored before it is sent, so the gaps
    between the replay and the live ones are fetched."""
    gate: SeqGate[int] = SeqGate(after_seq=after)
    out: list[int] = []

    def serve() -> None:
        while (fetch := gate.take_fetch()) is not None:
            assert fetch.up_to is not None
            out.extend(s for s in range(fetch.after + 1, fetch.up_to + 1) if gate.admit(s))
            out.extend(gate.finish())

    live = list(range(live_from, live_to + 1))
    during, later = live[:switch], live[switch:]
    assert gate.take_fetch() == Fetch(after)
    for seq in during:
        out += gate.live(seq, seq)
    out += [seq for seq in range(after + 1, stored + 1) if gate.admit(seq)]
    out += gate.finish()
    serve()
    for seq in later:
        out += gate.live(seq, seq)
        serve()
    assert out == list(range(after + 1, max([after, stored, *live]) + 1))
    assert gate.held == 0


@st.composite
def streams(draw: st.DrawFn) -> tuple[int | None, list[int | None], list[bool]]:
    """A resume point (or none), live events (seqs out of order, repeated, missing; None for
    events without a seq) and, per step, whether a pending fetch completes before it."""
    top = draw(st.integers(1, 30))
    after = draw(st.one_of(st.none(), st.integers(0, top)))
    live = draw(st.lists(st.one_of(st.integers(1, top), st.none()), max_size=60))
    steps = draw(st.lists(st.booleans(), min_size=len(live), max_size=len(live)))
    return after, live, steps


@given(streams())
def test_with_complete_history_the_client_sees_a_run_without_gaps(
    stream: tuple[int | None, list[int | None], list[bool]],
) -> None:
    after, live, steps = stream
    stored = max([s for s in live if s is not None] + [after or 0])
    gate: SeqGate[int | None] = SeqGate(after_seq=after)
    out: list[int | None] = []
    pending: list[Fetch] = []

    def complete_one() -> None:
        fetch = pending.pop()
        top = stored if fetch.up_to is None else fetch.up_to
        out.extend(s for s in range(fetch.after + 1, top + 1) if gate.admit(s))
        assert gate.complete
        out.extend(gate.finish())
        if (more := gate.take_fetch()) is not None:
            pending.append(more)

    if (first := gate.take_fetch()) is not None:
        pending.append(first)
    for seq, settle in zip(live, steps, strict=True):
        if settle and pending:
            complete_one()
        out.extend(gate.live(seq, seq))
        if (fetch := gate.take_fetch()) is not None:
            assert not pending  # one fetch at a time
            pending.append(fetch)
    while pending:
        complete_one()
    seqs = [s for s in out if s is not None]
    assert out.count(None) == live.count(None)  # events without a seq: each once
    if after is not None:
        assert seqs == list(range(after + 1, stored + 1))  # in order, no gap, no repeat
    elif seqs:
        assert seqs == list(range(seqs[0], stored + 1))  # from the first one delivered
    else:
        assert all(s is None for s in live)
    assert gate.held == 0


@given(streams(), st.lists(st.booleans(), max_size=60))
def test_when_history_fails_the_client_still_sees_every_later_event_once_in_order(
    stream: tuple[int | None, list[int | None], list[bool]], failures: list[bool]
) -> None:
    """Fetches fail (nothing arrives) as ``failures`` says: the gate gives up on them; the
    subscription never stalls and never repeats or reorders a seq."""
    after, live, steps = stream
    stored = max([s for s in live if s is not None] + [after or 0])
    gate: SeqGate[int | None] = SeqGate(after_seq=after)
    out: list[int | None] = []
    pending: list[Fetch] = []
    fails = iter(failures)

    def complete_one() -> None:
        fetch = pending.pop()
        if next(fails, True):
            out.extend(gate.give_up())
        else:
            top = stored if fetch.up_to is None else fetch.up_to
            out.extend(s for s in range(fetch.after + 1, top + 1) if gate.admit(s))
            out.extend(gate.finish())
        if (more := gate.take_fetch()) is not None:
            pending.append(more)

    if (first := gate.take_fetch()) is not None:
        pending.append(first)
    for seq, settle in zip(live, steps, strict=True):
        if settle and pending:
            complete_one()
        out.extend(gate.live(seq, seq))
        if (fetch := gate.take_fetch()) is not None:
            pending.append(fetch)
    while pending:
        complete_one()
    seqs = [s for s in out if s is not None]
    assert seqs == sorted(set(seqs))  # in order, each once
    assert out.count(None) == live.count(None)
    above = [s for s in live if s is not None and (after is None or s > after)]
    if above:
        assert seqs[-1] == max(above)  # nothing stuck behind a hole
    assert gate.held == 0
