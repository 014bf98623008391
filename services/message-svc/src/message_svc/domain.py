"""Pure rules of messages: content, send-rate buckets, the duplicate-content rule, marks."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from chat_common.errors import ContentTooLarge, InvalidInput


def check_content(content: str, max_bytes: int) -> None:
    """UTF-8 text, not blank once trimmed, at most ``max_bytes`` encoded."""
    if not content.strip():
        raise InvalidInput("content must not be blank", code="CONTENT_BLANK", field="content")
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(
            "content is not valid UTF-8 text", code="CONTENT_INVALID", field="content"
        ) from None
    if size > max_bytes:
        raise ContentTooLarge(f"content is {size} bytes; the limit is {max_bytes}", field="content")
    if "\x00" in content:
        raise InvalidInput("content must not contain NUL", code="CONTENT_INVALID", field="content")


def content_fingerprint(content: str) -> str:
    return hashlib.sha256(content.strip().encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class BucketPolicy:
    burst: int
    rate_per_second: float


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Decision:
    bucket: Bucket
    allowed: bool
    retry_after: float


def take(bucket: Bucket | None, now: float, policy: BucketPolicy, cost: float = 1.0) -> Decision:
    """Refill ``bucket`` up to ``now`` and take ``cost`` tokens if it holds them."""
    if bucket is None:
        tokens = float(policy.burst)
    else:
        elapsed = max(0.0, now - bucket.updated)
        tokens = min(float(policy.burst), bucket.tokens + elapsed * policy.rate_per_second)
    if tokens >= cost:
        return Decision(Bucket(tokens - cost, now), True, 0.0)
    missing = cost - tokens
    wait = math.inf if policy.rate_per_second <= 0 else missing / policy.rate_per_second
    return Decision(Bucket(tokens, now), False, wait)


def refund(bucket: Bucket, policy: BucketPolicy, cost: float = 1.0) -> Bucket:
    return Bucket(min(float(policy.burst), bucket.tokens + cost), bucket.updated)


def next_mark(current: int, requested: int, last_seq: int) -> int:
    """A read/delivered mark never moves backwards and never passes the last message."""
    return max(current, min(requested, last_seq))
