"""What the relay does with a row whose publish failed: retry it later with a growing,
jittered backoff, or, once its attempts are used up, bury it (the dead table).

Pure: the time (``now``) and the random source (``rng``, a ``random.random``-like callable)
are arguments. The relay's SQL applies these decisions; the reference model of the whole row
life cycle, which the property tests check the SQL against, lives with the tests
(``services/outbox-relay/tests/oracle.py``) and uses this policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEAD_BLOCKS_SESSION",
    "DEFAULT_POLICY",
    "MAX_ERROR_CHARS",
    "Bury",
    "InvalidArgument",
    "RetryLater",
    "RetryPolicy",
    "after_failure",
    "backoff_delay",
]

MAX_ERROR_CHARS: Final = 1_000
"""``last_error`` is cut to this many characters."""

DEAD_BLOCKS_SESSION: Final = False
"""A dead row does not hold back the later rows of its session: a poison row would otherwise
stall the conversation forever; a client that misses the dead message recovers it from history
by ``seq`` (resume and delivered marks), the path that covers any gap on the wire."""


class InvalidArgument(ValueError):
    """A policy, time or random draw outside what the rules accept."""


def _check_time(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failed publish is retried.

    The delay before attempt ``n + 1`` (after ``n`` failures) grows as
    ``base_delay * multiplier ** (n - 1)``, capped at ``max_delay``, with "equal" jitter: half
    of it fixed, the other half drawn uniformly from ``[0, half)``.
    """

    max_attempts: int = 10
    base_delay: float = 0.5
    max_delay: float = 60.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidArgument(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        for name in ("base_delay", "max_delay", "multiplier"):
            _check_time(name, getattr(self, name))
        if self.base_delay < 0:
            raise InvalidArgument(f"base_delay must be >= 0, got {self.base_delay!r}")
        if self.max_delay < self.base_delay:
            raise InvalidArgument(
                f"max_delay ({self.max_delay!r}) must be >= base_delay ({self.base_delay!r})"
            )
        if self.multiplier < 1:
            raise InvalidArgument(f"multiplier must be >= 1, got {self.multiplier!r}")

    def ceiling(self, attempt: int) -> float:
        """The un-jittered, capped delay after the ``attempt``-th failure (``attempt >= 1``)."""
        if attempt < 1:
            raise InvalidArgument(f"attempt must be >= 1, got {attempt!r}")
        if self.base_delay == 0:
            return 0.0
        try:
            raw = self.base_delay * self.multiplier ** (attempt - 1)
        except OverflowError:
            return self.max_delay
        return min(raw, self.max_delay)


DEFAULT_POLICY: Final = RetryPolicy()


def backoff_delay(attempt: int, policy: RetryPolicy, rng: Callable[[], float]) -> float:
    """Seconds to wait after the ``attempt``-th failure (``attempt >= 1``).

    With ``c = policy.ceiling(attempt)`` the result lies in ``[c / 2, c)`` (exactly ``0`` when
    ``c`` is ``0``): never negative, never above ``policy.max_delay``, and the same for the same
    ``rng`` draw. ``rng`` must return a float in ``[0, 1)``, like ``random.random``; anything
    else raises :class:`InvalidArgument`.
    """
    ceiling = policy.ceiling(attempt)
    draw = rng()
    if not 0.0 <= draw < 1.0:
        raise InvalidArgument(f"rng must return a float in [0, 1), got {draw!r}")
    half = ceiling / 2
    delay = half + half * draw
    if delay >= ceiling > 0:
        # Rounding of the sum can land on the ceiling itself; keep the interval half-open.
        delay = math.nextafter(ceiling, 0.0)
    return delay


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Back to pending: the attempt counted, due again at ``next_retry_at``."""

    retry_count: int
    next_retry_at: float
    error: str


@dataclass(frozen=True, slots=True)
class Bury:
    """Attempts used up: the row goes to the dead table."""

    retry_count: int
    error: str


def after_failure(
    retry_count: int, now: float, error: str, policy: RetryPolicy, rng: Callable[[], float]
) -> RetryLater | Bury:
    """The decision for a row that failed its ``retry_count + 1``-th attempt at ``now``."""
    attempts = retry_count + 1
    kept = error[:MAX_ERROR_CHARS]
    if attempts >= policy.max_attempts:
        return Bury(attempts, kept)
    return RetryLater(attempts, now + backoff_delay(attempts, policy, rng), kept)
