"""The write-back rules of a publish round, without I/O."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID, uuid4

from hypothesis import given
from hypothesis import strategies as st

from outbox_relay.batch import (
    CONFIRMED,
    NOT_SENT,
    Outcome,
    Verdict,
    failed,
    session_key,
    settle,
    unknown,
    waves,
)


@dataclass(frozen=True)
class Row:
    id: int
    session_id: UUID | None


A, B = uuid4(), uuid4()


def test_all_confirmed_are_published() -> None:
    rows = [Row(1, A), Row(2, B), Row(3, A)]
    done = settle(rows, {r.id: CONFIRMED for r in rows})
    assert done.published == rows
    assert done.failed == []
    assert done.released == done.overtaken == []


def test_rows_after_a_failed_row_of_its_session_are_released_even_if_confirmed() -> None:
    rows = [Row(1, A), Row(2, A), Row(3, B), Row(4, A), Row(5, A)]
    outcomes = {1: CONFIRMED, 2: failed("nack"), 3: CONFIRMED, 4: CONFIRMED}
    done = settle(rows, outcomes)
    assert [r.id for r in done.published] == [1, 3]
    assert [(r.id, e) for r, e in done.failed] == [(2, "nack")]
    assert [r.id for r in done.released] == [4, 5]
    assert [r.id for r in done.overtaken] == [4]


def test_unknown_and_not_sent_are_released_without_an_attempt() -> None:
    rows = [Row(1, A), Row(2, B), Row(3, None)]
    done = settle(rows, {1: unknown("channel closed"), 3: CONFIRMED})
    assert done.failed == []
    assert [r.id for r in done.released] == [1, 2]
    assert [r.id for r in done.published] == [3]


def test_rows_without_a_session_do_not_hold_each_other_back() -> None:
    rows = [Row(1, None), Row(2, None)]
    done = settle(rows, {1: failed("x"), 2: CONFIRMED})
    assert [r.id for r in done.published] == [2]


verdicts = st.sampled_from([CONFIRMED, NOT_SENT, failed("f"), unknown("u")])


@given(st.lists(st.tuples(st.sampled_from([A, B, None]), verdicts), max_size=30))
def test_every_row_lands_once_and_a_published_row_never_follows_an_unpublished_one(
    plan: list[tuple[UUID | None, Outcome]],
) -> None:
    rows = [Row(i + 1, session) for i, (session, _) in enumerate(plan)]
    outcomes = {row.id: outcome for row, (_, outcome) in zip(rows, plan, strict=True)}
    done = settle(list(reversed(rows)), outcomes)
    landed = [r.id for r in done.published] + [r.id for r, _ in done.failed]
    landed += [r.id for r in done.released]
    assert sorted(landed) == [r.id for r in rows]
    published = {r.id for r in done.published}
    for row in rows:
        if row.id in published and row.session_id is not None:
            earlier = [r for r in rows if r.session_id == row.session_id and r.id < row.id]
            assert all(r.id in published for r in earlier)
        if row.id in published:
            assert outcomes[row.id].verdict is Verdict.CONFIRMED
    assert all(outcomes[r.id].verdict is Verdict.FAILED for r, _ in done.failed)


def test_waves_take_one_row_of_each_session_at_a_time_in_id_order() -> None:
    rows = [Row(5, A), Row(1, A), Row(2, B), Row(3, None), Row(4, A), Row(6, None), Row(7, B)]
    assert [[r.id for r in wave] for wave in waves(rows)] == [[1, 2, 3, 6], [4, 7], [5]]
    assert waves([]) == []


@given(
    st.lists(
        st.tuples(st.integers(1, 500), st.sampled_from([A, B, None])),
        unique_by=lambda pair: pair[0],
        max_size=40,
    )
)
def test_waves_hold_every_row_once_and_each_session_in_order(
    pairs: list[tuple[int, UUID | None]],
) -> None:
    rows = [Row(i, s) for i, s in pairs]
    split = waves(rows)
    assert sorted(r.id for wave in split for r in wave) == sorted(r.id for r in rows)
    for wave in split:
        keys = [session_key(r) for r in wave]
        assert len(keys) == len(set(keys))  # at most one row of a session per wave
    position = {r.id: n for n, wave in enumerate(split) for r in wave}
    for earlier in rows:
        for later in rows:
            same_session = earlier.session_id is not None and earlier.session_id == later.session_id
            if same_session and earlier.id < later.id:
                assert position[earlier.id] < position[later.id]
