"""The retry policy the relay runs: the same decisions as the reference model's Failed event."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from outbox_relay.retry import MAX_ERROR_CHARS, Bury, RetryLater, RetryPolicy, after_failure

from .oracle import CLAIMED, DEAD, Failed, OutboxRow, apply


@given(
    retry_count=st.integers(0, 12),
    draw=st.floats(0.0, 1.0, exclude_max=True),
    error=st.text(max_size=1_200),
)
def test_after_failure_decides_as_the_model(retry_count: int, draw: float, error: str) -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=60.0)
    now = 1_000.0
    decision = after_failure(retry_count, now, error, policy, lambda: draw)
    held = OutboxRow(
        id=1,
        session_id=None,
        status=CLAIMED,
        retry_count=retry_count,
        next_retry_at=now,
        claim_token="t",
        lease_until=now + 30,
    )
    model = apply(held, Failed("t", now, error, lambda: draw), policy)
    assert decision.error == model.last_error
    assert len(decision.error) <= MAX_ERROR_CHARS
    assert decision.retry_count == model.retry_count
    if model.status is DEAD:
        assert isinstance(decision, Bury)
    else:
        assert isinstance(decision, RetryLater)
        assert decision.next_retry_at == model.next_retry_at
