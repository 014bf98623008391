"""The outbox row rules: every transition, fencing, leases, retries, backoff and order."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .oracle import (
    DEAD_BLOCKS_SESSION,
    DEFAULT_POLICY,
    MAX_ERROR_CHARS,
    TOKEN_EVENTS,
    TRANSITIONS,
    Claim,
    Confirmed,
    Event,
    EventType,
    Failed,
    IllegalTransition,
    InvalidArgument,
    LeaseHeld,
    NotClaimable,
    NotDue,
    OutboxError,
    OutboxRow,
    Released,
    Requeue,
    RetryPolicy,
    RowState,
    StaleClaim,
    TransitionRefused,
    apply,
    backoff_delay,
    publishable_in_order,
)

S1 = UUID("00000000-0000-4000-8000-000000000001")
S2 = UUID("00000000-0000-4000-8000-000000000002")
S3 = UUID("00000000-0000-4000-8000-000000000003")

T0 = 1_000.0
LEASE = 30.0
ALMOST_ONE = math.nextafter(1.0, 0.0)  # 0.9999999999999999, the largest random.random()


def const(value: float) -> Callable[[], float]:
    return lambda: value


LOW = const(0.0)
HIGH = const(ALMOST_ONE)


# --------------------------------------------------------------------------------------------
# Builders: reach each state through the rules themselves


def pending(row_id: int = 1, session: UUID | None = S1, at: float = T0) -> OutboxRow:
    return OutboxRow.new(row_id, session, at)


def claimed(token: str = "a", row_id: int = 1, session: UUID | None = S1) -> OutboxRow:
    return apply(pending(row_id, session), Claim(T0, LEASE, token))


def published(row_id: int = 1, session: UUID | None = S1) -> OutboxRow:
    return apply(claimed("a", row_id, session), Confirmed("a", T0 + 1))


def dead(row_id: int = 1, session: UUID | None = S1) -> OutboxRow:
    policy = RetryPolicy(max_attempts=1)
    return apply(claimed("a", row_id, session), Failed("a", T0 + 1, "boom", LOW), policy)


ROW_IN_STATE: dict[RowState, Callable[[], OutboxRow]] = {
    RowState.PENDING: pending,
    RowState.CLAIMED: claimed,
    RowState.PUBLISHED: published,
    RowState.DEAD: dead,
}

# For each kind, the most favourable event: the one that succeeds wherever the table allows
# the pair. Claims come after the lease of ``claimed()`` has expired, under a fresh token.
LATER = T0 + LEASE + 1
BEST_EVENT: dict[EventType, Event] = {
    EventType.CLAIM: Claim(LATER, LEASE, "b"),
    EventType.CONFIRMED: Confirmed("a", LATER),
    EventType.FAILED: Failed("a", LATER, "broker said no", LOW),
    EventType.RELEASED: Released("a"),
    EventType.REQUEUE: Requeue(LATER),
}


# --------------------------------------------------------------------------------------------
# The table


def test_table_is_the_documented_one() -> None:
    P, C, U, D = RowState.PENDING, RowState.CLAIMED, RowState.PUBLISHED, RowState.DEAD
    assert dict(TRANSITIONS) == {
        (P, EventType.CLAIM): {C},
        (C, EventType.CLAIM): {C},
        (C, EventType.CONFIRMED): {U},
        (C, EventType.FAILED): {P, D},
        (C, EventType.RELEASED): {P},
        (D, EventType.REQUEUE): {P},
    }


@pytest.mark.parametrize(
    ("state", "kind"), list(itertools.product(RowState, EventType)), ids=lambda v: v.value
)
def test_every_state_event_pair(state: RowState, kind: EventType) -> None:
    row = ROW_IN_STATE[state]()
    assert row.status is state
    event = BEST_EVENT[kind]
    targets = TRANSITIONS.get((state, kind))
    if targets is not None:
        after = apply(row, event)
        assert after.status in targets
        assert after.id == row.id
        assert after.session_id == row.session_id
    else:
        expected = StaleClaim if kind in TOKEN_EVENTS else IllegalTransition
        with pytest.raises(expected) as info:
            apply(row, event)
        assert info.value.row_id == row.id
        assert info.value.state is state
        assert info.value.event is kind
        assert isinstance(info.value, TransitionRefused)
        assert isinstance(info.value, OutboxError)


@pytest.mark.parametrize("state", [RowState.PUBLISHED, RowState.DEAD])
def test_terminal_states_accept_only_the_table(state: RowState) -> None:
    row = ROW_IN_STATE[state]()
    accepted = []
    for kind, event in BEST_EVENT.items():
        try:
            apply(row, event)
        except TransitionRefused:
            continue
        accepted.append(kind)
    assert accepted == ([EventType.REQUEUE] if state is RowState.DEAD else [])


def test_apply_never_mutates_its_input() -> None:
    row = claimed()
    snapshot = dataclasses.astuple(row)
    apply(row, Confirmed("a", T0 + 2))
    assert dataclasses.astuple(row) == snapshot
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.retry_count = 3  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Claim and leases


def test_claim_sets_token_and_lease() -> None:
    row = apply(pending(), Claim(T0 + 5, 12.5, "tok"))
    assert row.status is RowState.CLAIMED
    assert row.claim_token == "tok"
    assert row.lease_until == T0 + 5 + 12.5
    assert row.retry_count == 0


def test_claim_exactly_when_due_succeeds_and_before_is_not_due() -> None:
    row = pending(at=T0)
    assert apply(row, Claim(T0, LEASE, "a")).status is RowState.CLAIMED
    with pytest.raises(NotDue):
        apply(row, Claim(T0 - 0.001, LEASE, "a"))
    assert not row.claimable(T0 - 0.001)
    assert row.claimable(T0)


def test_live_lease_cannot_be_claimed() -> None:
    row = claimed("a")
    assert row.lease_until == T0 + LEASE
    with pytest.raises(LeaseHeld) as info:
        apply(row, Claim(T0 + LEASE - 0.001, LEASE, "b"))
    assert isinstance(info.value, NotClaimable)


def test_expired_lease_is_reclaimed_by_a_new_token_without_counting_an_attempt() -> None:
    row = claimed("a")
    taken = apply(row, Claim(T0 + LEASE, 10.0, "b"))  # lease_until <= now: expired
    assert taken.status is RowState.CLAIMED
    assert taken.claim_token == "b"
    assert taken.lease_until == T0 + LEASE + 10.0
    assert taken.retry_count == row.retry_count


def test_reclaim_with_the_same_token_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        apply(claimed("a"), Claim(LATER, LEASE, "a"))


# --------------------------------------------------------------------------------------------
# Fencing


def test_stale_claimer_is_refused_after_takeover() -> None:
    row = apply(claimed("a"), Claim(LATER, LEASE, "b"))
    for event in (
        Confirmed("a", LATER + 1),
        Failed("a", LATER + 1, "late", LOW),
        Released("a"),
    ):
        with pytest.raises(StaleClaim):
            apply(row, event)
    done = apply(row, Confirmed("b", LATER + 1))
    assert done.status is RowState.PUBLISHED
    # The paused claimer wakes up after the new owner published: still refused, still stale.
    with pytest.raises(StaleClaim):
        apply(done, Confirmed("a", LATER + 2))


def test_confirm_after_lease_expiry_is_accepted_when_nobody_took_the_row() -> None:
    row = claimed("a")
    done = apply(row, Confirmed("a", T0 + LEASE * 10))
    assert done.status is RowState.PUBLISHED
    assert done.sent_at == T0 + LEASE * 10
    assert done.claim_token is None
    assert done.lease_until is None


def test_failed_and_released_after_expiry_with_matching_token_are_accepted() -> None:
    late = T0 + LEASE * 10
    assert apply(claimed("a"), Failed("a", late, "x", LOW)).status is RowState.PENDING
    assert apply(claimed("a"), Released("a")).status is RowState.PENDING


@pytest.mark.parametrize(
    "event", [Confirmed("zz", T0), Failed("zz", T0, "x", LOW), Released("zz")], ids=repr
)
def test_wrong_token_is_stale(event: Event) -> None:
    with pytest.raises(StaleClaim):
        apply(claimed("a"), event)


def test_double_release_is_stale() -> None:
    row = apply(claimed("a"), Released("a"))
    with pytest.raises(StaleClaim):
        apply(row, Released("a"))


# --------------------------------------------------------------------------------------------
# Failures, retries, dead


def test_failure_backs_off_and_keeps_the_error() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=100.0)
    row = apply(claimed("a"), Failed("a", T0 + 3, "nack", LOW), policy)
    assert row.status is RowState.PENDING
    assert row.retry_count == 1
    assert row.next_retry_at == T0 + 3 + 0.5  # attempt 1: ceiling 1.0, rng 0 -> half
    assert row.last_error == "nack"
    assert row.claim_token is None
    assert row.lease_until is None


def test_error_text_is_truncated() -> None:
    row = apply(claimed("a"), Failed("a", T0, "e" * (MAX_ERROR_CHARS * 3), LOW))
    assert row.last_error == "e" * MAX_ERROR_CHARS
    assert MAX_ERROR_CHARS == 1_000


@pytest.mark.parametrize("max_attempts", [1, 2, 3, 10])
def test_retry_count_reaches_dead_at_exactly_max_attempts(max_attempts: int) -> None:
    policy = RetryPolicy(max_attempts=max_attempts)
    row = pending()
    now = T0
    for attempt in range(1, max_attempts + 1):
        row = apply(row, Claim(now, LEASE, f"t{attempt}"), policy)
        row = apply(row, Failed(f"t{attempt}", now + 1, f"fail {attempt}", HIGH), policy)
        assert row.retry_count == attempt
        if attempt < max_attempts:
            assert row.status is RowState.PENDING
            assert row.next_retry_at > now + 1
            with pytest.raises(NotDue):
                apply(row, Claim(now + 1, LEASE, "early"), policy)
            now = row.next_retry_at
        else:
            assert row.status is RowState.DEAD
            assert row.last_error == f"fail {attempt}"
    with pytest.raises(IllegalTransition):
        apply(row, Claim(now + 1_000, LEASE, "again"), policy)


def test_dead_does_not_draw_from_rng() -> None:
    def forbidden() -> float:
        raise AssertionError("rng must not be called for a dead row")

    row = apply(claimed(), Failed("a", T0, "x", forbidden), RetryPolicy(max_attempts=1))
    assert row.status is RowState.DEAD
    assert row.next_retry_at == T0  # unchanged


def test_release_counts_no_attempt_and_keeps_the_schedule() -> None:
    before = pending(at=T0 - 5)
    row = apply(apply(before, Claim(T0, LEASE, "a")), Released("a"))
    assert row == before


def test_requeue_resets_a_dead_row_and_keeps_its_history() -> None:
    row = apply(dead(), Requeue(T0 + 500))
    assert row.status is RowState.PENDING
    assert row.retry_count == 0
    assert row.next_retry_at == T0 + 500
    assert row.last_error == "boom"
    assert apply(row, Claim(T0 + 500, LEASE, "n")).status is RowState.CLAIMED


@pytest.mark.parametrize("state", [RowState.PENDING, RowState.CLAIMED, RowState.PUBLISHED])
def test_requeue_of_a_live_or_published_row_is_illegal(state: RowState) -> None:
    with pytest.raises(IllegalTransition):
        apply(ROW_IN_STATE[state](), Requeue(LATER))


# --------------------------------------------------------------------------------------------
# Backoff


def test_default_policy() -> None:
    assert (
        RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=60.0, multiplier=2.0)
        == DEFAULT_POLICY
    )


def test_backoff_grows_and_caps_with_low_draw() -> None:
    delays = [backoff_delay(n, DEFAULT_POLICY, LOW) for n in range(1, 12)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_backoff_high_draw_stays_below_the_ceiling() -> None:
    for attempt in range(1, 40):
        ceiling = DEFAULT_POLICY.ceiling(attempt)
        delay = backoff_delay(attempt, DEFAULT_POLICY, HIGH)
        assert ceiling / 2 <= delay < ceiling <= DEFAULT_POLICY.max_delay
        assert delay == pytest.approx(ceiling, rel=1e-12)


def test_backoff_huge_attempt_does_not_overflow() -> None:
    assert DEFAULT_POLICY.ceiling(10**6) == 60.0
    assert 30.0 <= backoff_delay(10**6, DEFAULT_POLICY, const(0.5)) < 60.0


def test_backoff_zero_base_is_zero() -> None:
    policy = RetryPolicy(base_delay=0.0, max_delay=0.0)
    assert backoff_delay(5, policy, HIGH) == 0.0


def test_backoff_is_deterministic_for_a_given_rng() -> None:
    draws = iter([0.3, 0.3])
    first = backoff_delay(4, DEFAULT_POLICY, lambda: next(draws))
    second = backoff_delay(4, DEFAULT_POLICY, lambda: next(draws))
    assert first == second == 2.0 + 2.0 * 0.3


@pytest.mark.parametrize("attempt", [0, -1])
def test_backoff_rejects_attempts_below_one(attempt: int) -> None:
    with pytest.raises(InvalidArgument):
        backoff_delay(attempt, DEFAULT_POLICY, LOW)


@pytest.mark.parametrize("draw", [1.0, -0.1, math.nan, 2.0])
def test_backoff_rejects_a_bad_rng(draw: float) -> None:
    with pytest.raises(InvalidArgument):
        backoff_delay(1, DEFAULT_POLICY, const(draw))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"base_delay": -1.0},
        {"base_delay": 5.0, "max_delay": 1.0},
        {"multiplier": 0.5},
        {"max_delay": math.inf},
        {"base_delay": math.nan},
    ],
    ids=repr,
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 50),
    base_delay=st.floats(0.0, 10.0),
    max_delay=st.floats(10.0, 3_600.0),
    multiplier=st.floats(1.0, 10.0),
)
draws = st.floats(0.0, 1.0, exclude_max=True)


@given(attempt=st.integers(1, 5_000), policy=policies, draw=draws)
def test_backoff_bounds(attempt: int, policy: RetryPolicy, draw: float) -> None:
    ceiling = policy.ceiling(attempt)
    delay = backoff_delay(attempt, policy, const(draw))
    assert 0.0 <= ceiling <= policy.max_delay
    assert delay >= 0.0
    assert delay >= ceiling / 2
    assert delay < ceiling or delay == ceiling == 0.0
    assert backoff_delay(attempt, policy, const(draw)) == delay


@given(attempt=st.integers(1, 200), policy=policies, a=draws, b=draws)
def test_backoff_is_monotone(attempt: int, policy: RetryPolicy, a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert backoff_delay(attempt, policy, const(low)) <= backoff_delay(attempt, policy, const(high))
    assert policy.ceiling(attempt) <= policy.ceiling(attempt + 1)


# --------------------------------------------------------------------------------------------
# Row and event validation


def test_row_accepts_the_column_string_for_status() -> None:
    row = OutboxRow(1, None, "pending", 0, T0)  # type: ignore[arg-type]
    assert row.status is RowState.PENDING


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": "sent"},
        {"retry_count": -1},
        {"next_retry_at": math.nan},
        {"status": RowState.CLAIMED},
        {"status": RowState.CLAIMED, "claim_token": "a"},
        {"claim_token": "a", "lease_until": T0},
        {"status": RowState.CLAIMED, "claim_token": "", "lease_until": T0},
        {"status": RowState.PUBLISHED},
        {"sent_at": T0},
    ],
    ids=repr,
)
def test_row_invariants(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {
        "id": 1,
        "session_id": S1,
        "status": RowState.PENDING,
        "retry_count": 0,
        "next_retry_at": T0,
    }
    with pytest.raises(InvalidArgument):
        OutboxRow(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build",
    [
        lambda: Claim(T0, 0.0, "a"),
        lambda: Claim(T0, -1.0, "a"),
        lambda: Claim(math.nan, LEASE, "a"),
        lambda: Claim(T0, math.inf, "a"),
        lambda: Claim(T0, LEASE, ""),
        lambda: Confirmed("", T0),
        lambda: Confirmed("a", math.inf),
        lambda: Failed("a", math.nan, "x", LOW),
        lambda: Released(""),
        lambda: Requeue(math.nan),
    ],
)
def test_event_validation(build: Callable[[], Event]) -> None:
    with pytest.raises(InvalidArgument):
        build()


def test_invalid_argument_is_also_a_value_error() -> None:
    assert issubclass(InvalidArgument, ValueError)
    assert issubclass(NotDue, NotClaimable)
    assert issubclass(LeaseHeld, NotClaimable)
    for cls in (IllegalTransition, NotClaimable, StaleClaim):
        assert issubclass(cls, TransitionRefused)
        assert issubclass(cls, OutboxError)


# --------------------------------------------------------------------------------------------
# Random walks through the state machine


event_strategy = st.one_of(
    st.builds(
        Claim,
        st.integers(0, 200).map(float),
        st.sampled_from([1.0, 20.0]),
        st.text("ab", min_size=1, max_size=2),
    ),
    st.builds(Confirmed, st.sampled_from(["a", "b", "ab"]), st.integers(0, 200).map(float)),
    st.builds(
        Failed,
        st.sampled_from(["a", "b", "ab"]),
        st.integers(0, 200).map(float),
        st.text(max_size=5),
        draws.map(const),
    ),
    st.builds(Released, st.sampled_from(["a", "b", "ab"])),
    st.builds(Requeue, st.integers(0, 200).map(float)),
)


@given(events=st.lists(event_strategy, max_size=40), max_attempts=st.integers(1, 4))
def test_random_walk_keeps_the_invariants(events: list[Event], max_attempts: int) -> None:
    policy = RetryPolicy(max_attempts=max_attempts)
    row = pending(at=0.0)
    for event in events:
        try:
            after = apply(row, event, policy)
        except (TransitionRefused, InvalidArgument):
            continue
        assert after.status in TRANSITIONS[(row.status, event.kind)]
        assert 0 <= after.retry_count <= max_attempts
        assert (after.status is RowState.DEAD) == (after.retry_count >= max_attempts)
        if after.status is RowState.PUBLISHED:
            assert isinstance(event, Confirmed)
            assert row.claim_token == event.token
        if isinstance(event, Confirmed | Failed | Released):
            assert row.status is RowState.CLAIMED  # only the claim holder ever moves a row
        row = after


# --------------------------------------------------------------------------------------------
# Per-session order


def row_at(
    row_id: int,
    session: UUID | None,
    state: RowState = RowState.PENDING,
    *,
    due: float = T0,
    token: str | None = None,
    lease_until: float | None = None,
) -> OutboxRow:
    if state is RowState.CLAIMED:
        token = token or "other"
        lease_until = T0 + LEASE if lease_until is None else lease_until
    return OutboxRow(
        id=row_id,
        session_id=session,
        status=state,
        retry_count=0,
        next_retry_at=due,
        claim_token=token if state is RowState.CLAIMED else None,
        lease_until=lease_until if state is RowState.CLAIMED else None,
        sent_at=T0 if state is RowState.PUBLISHED else None,
    )


def ids(rows: list[OutboxRow]) -> list[int]:
    return [r.id for r in rows]


def test_all_due_rows_of_a_session_are_taken_in_order() -> None:
    rows = [row_at(1, S1), row_at(2, S2), row_at(3, S1), row_at(4, S1)]
    assert ids(publishable_in_order(rows, set(), now=T0)) == [1, 2, 3, 4]


def test_a_session_stops_at_its_first_ineligible_row() -> None:
    rows = [row_at(1, S1), row_at(2, S1, due=T0 + 1), row_at(3, S1), row_at(4, S2)]
    assert ids(publishable_in_order(rows, set(), now=T0)) == [1, 4]


def test_live_foreign_claim_blocks_but_own_or_expired_claim_does_not() -> None:
    rows = [row_at(1, S1, RowState.CLAIMED, token="other"), row_at(2, S1)]
    assert publishable_in_order(rows, set(), now=T0) == []
    assert ids(publishable_in_order(rows, set(), now=T0, token="other")) == [1, 2]
    assert ids(publishable_in_order(rows, set(), now=T0 + LEASE)) == [1, 2]


def test_dead_and_published_rows_do_not_block_and_are_not_returned() -> None:
    assert DEAD_BLOCKS_SESSION is False
    rows = [row_at(1, S1, RowState.DEAD), row_at(2, S1, RowState.PUBLISHED), row_at(3, S1)]
    assert ids(publishable_in_order(rows, set(), now=T0)) == [3]


def test_blocked_sessions_are_skipped() -> None:
    rows = [row_at(1, S1), row_at(2, S2), row_at(3, None)]
    assert ids(publishable_in_order(rows, {S1}, now=T0)) == [2, 3]
    assert ids(publishable_in_order(rows, [S1, None], now=T0)) == [2]


def test_rows_without_session_are_unordered() -> None:
    rows = [row_at(1, None, due=T0 + 1), row_at(2, None), row_at(3, None, RowState.CLAIMED)]
    assert ids(publishable_in_order(rows, (), now=T0)) == [2]


@pytest.mark.parametrize("order", [[2, 1], [1, 1]])
def test_candidates_must_be_sorted_by_unique_id(order: list[int]) -> None:
    with pytest.raises(InvalidArgument):
        publishable_in_order([row_at(i, S1) for i in order], set(), now=T0)


SESSIONS = [None, S1, S2, S3]


@st.composite
def candidate_lists(draw: st.DrawFn) -> list[OutboxRow]:
    row_ids = sorted(draw(st.sets(st.integers(1, 1_000), max_size=25)))
    rows = []
    for row_id in row_ids:
        state = draw(st.sampled_from(list(RowState)))
        rows.append(
            row_at(
                row_id,
                draw(st.sampled_from(SESSIONS)),
                state,
                due=float(draw(st.integers(0, 10))),
                token=draw(st.sampled_from(["me", "other"])),
                lease_until=float(draw(st.integers(0, 10))),
            )
        )
    return rows


@given(
    rows=candidate_lists(),
    blocked=st.sets(st.sampled_from(SESSIONS), max_size=2),
    now=st.integers(0, 10).map(float),
    token=st.sampled_from([None, "me"]),
)
def test_order_property(
    rows: list[OutboxRow], blocked: set[UUID | None], now: float, token: str | None
) -> None:
    result = publishable_in_order(rows, blocked, now=now, token=token)
    chosen = {r.id for r in result}
    assert ids(result) == [r.id for r in rows if r.id in chosen]  # a subsequence, id order
    done = {RowState.PUBLISHED, RowState.DEAD}
    for r in result:
        assert r.session_id not in blocked
        assert r.eligible(now, token)
        if r.session_id is None:
            continue
        for earlier in rows:
            if earlier.session_id == r.session_id and earlier.id < r.id:
                # Never ahead of an earlier unpublished row of its session that stays behind.
                assert earlier.id in chosen or earlier.status in done
    # And nothing is held back without a reason.
    for r in rows:
        if r.id in chosen or r.status in done or r.session_id in blocked:
            continue
        if not r.eligible(now, token):
            continue
        assert r.session_id is not None
        assert any(
            e.session_id == r.session_id
            and e.id < r.id
            and e.status not in done
            and e.id not in chosen
            for e in rows
        )
