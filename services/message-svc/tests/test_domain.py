"""Pure rules: content, token buckets, marks."""

from __future__ import annotations

import math

import pytest
from chat_common.errors import ContentTooLarge, InvalidInput
from message_svc.domain import BucketPolicy, check_content, next_mark, refund, take


@pytest.mark.parametrize("content", ["", "   ", "\n\t "])
def test_blank_content_is_refused(content: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_content(content, 4096)
    assert caught.value.field == "content"


def test_size_is_counted_in_encoded_bytes() -> None:
    check_content("é" * 2048, 4096)  # 4096 bytes
    with pytest.raises(ContentTooLarge):
        check_content("é" * 2049, 4096)


def test_lone_surrogates_and_nul_are_refused() -> None:
    with pytest.raises(InvalidInput):
        check_content("a\ud800b", 4096)
    with pytest.raises(InvalidInput):
        check_content("a\x00b", 4096)


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    policy = BucketPolicy(burst=3, rate_per_second=2.0)
    bucket = None
    for _ in range(3):
        decision = take(bucket, 100.0, policy)
        assert decision.allowed
        bucket = decision.bucket
    refused = take(bucket, 100.0, policy)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.5)
    assert take(refused.bucket, 100.5, policy).allowed
    assert not take(take(refused.bucket, 100.5, policy).bucket, 100.5, policy).allowed


def test_refill_is_capped_at_the_burst_and_refund_too() -> None:
    policy = BucketPolicy(burst=2, rate_per_second=1.0)
    decision = take(None, 0.0, policy)
    later = take(decision.bucket, 1000.0, policy)
    assert later.bucket.tokens == 1.0
    assert refund(refund(later.bucket, policy), policy).tokens == 2.0


def test_zero_rate_never_refills() -> None:
    policy = BucketPolicy(burst=1, rate_per_second=0.0)
    first = take(None, 0.0, policy)
    assert first.allowed
    assert math.isinf(take(first.bucket, 10.0, policy).retry_after)


@pytest.mark.parametrize(
    ("current", "requested", "last", "expected"),
    [(0, 5, 10, 5), (5, 3, 10, 5), (5, 50, 10, 10), (0, 0, 0, 0), (7, 9, 7, 7)],
)
def test_marks_never_go_back_nor_past_the_last_seq(
    current: int, requested: int, last: int, expected: int
) -> None:
    assert next_mark(current, requested, last) == expected
