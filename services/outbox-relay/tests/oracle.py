"""The reference model of an outbox row's life (the test oracle): its state machine, fencing,
retries and per-session order, which the property tests check the relay's SQL against.

The relay itself runs only the retry policy (``outbox_relay.retry``, used here too); the
other rules live in its SQL (``outbox_relay.repository``), and the tests hold both to this
model. Pure code: the time (``now``, float epoch seconds) and the random source (``rng``) are
always arguments, so every decision is reproducible.

States and events
=================

A row of ``chat_message_outbox`` is in one of four states. Events move it, and only the moves
listed in :data:`TRANSITIONS` exist; anything else raises a :class:`TransitionRefused`::

    PENDING --Claim--> CLAIMED --Confirmed--> PUBLISHED            (terminal)
       ^                 |  ^
       |                 |  '--Claim (lease expired; new token)
       +----Released-----+
       +----Failed-------+ (attempts left: back off)
                         '--Failed (attempts used up)--> DEAD --Requeue--> PENDING

* ``Claim(now, lease_seconds, token)``: a PENDING row whose ``next_retry_at <= now``, or a
  CLAIMED row whose lease has expired (``lease_until <= now``; its old claimer lost it), becomes
  CLAIMED by ``token`` until ``now + lease_seconds``. Taking over an expired lease does not
  count an attempt.
* ``Confirmed(token, now)``: the broker confirmed the publish. Accepted only from the holder of
  the current claim (fencing), even if its lease has run out, as long as nobody took the row
  over. Records ``sent_at``.
* ``Failed(token, now, error, rng)``: the publish failed. The attempt is counted; the row goes
  back to PENDING with ``next_retry_at = now + backoff_delay(attempts)``, or to DEAD once
  ``retry_count`` reaches ``policy.max_attempts``. The error text is kept (at most
  :data:`MAX_ERROR_CHARS` characters).
* ``Released(token)``: the claimer gives the row back unpublished (graceful shutdown). No
  attempt is counted and ``next_retry_at`` is unchanged.
* ``Requeue(now)``: an operator sends a DEAD row round again: PENDING, ``retry_count`` 0,
  due at once. ``last_error`` stays as history.

Invariant checked on every :class:`OutboxRow`: ``claim_token`` and ``lease_until`` are set if
and only if the row is CLAIMED, and ``sent_at`` is set if and only if it is PUBLISHED.

Claim tokens must be unique per claim (for instance ``uuid4().hex``): the token is the fencing
token. Every event that carries one (``Confirmed``, ``Failed``, ``Released``) is refused with
:class:`StaleClaim` unless the row is CLAIMED by exactly that token, whatever state the row is
in: a claimer paused past its lease may find the row re-claimed, published, failed or released
by someone else, and in every case it no longer owns it and must not write to it.

Per-session order
=================

Within a session, a row is never published before an earlier (smaller ``id``) row of the same
session that is still unpublished: :func:`publishable_in_order` takes a session's rows in id
order and stops at the first one that is not eligible now. Rows without a session are
unordered.

A DEAD row does **not** block the later rows of its session (``retry.DEAD_BLOCKS_SESSION``).

Exceptions
==========

::

    OutboxError
     +-- TransitionRefused                  the row cannot take this event now; carries the
          |                                 row id, its state and the event kind
          +-- IllegalTransition             the state never accepts this event
          +-- NotClaimable                  Claim on a claimable state, but not now
          |    +-- NotDue                   PENDING, next_retry_at still in the future
          |    +-- LeaseHeld                CLAIMED, lease still live
          +-- StaleClaim                    the event's token is not the row's current claim

Bad policy, event argument or row field values raise ``retry.InvalidArgument`` (a
``ValueError``). None of them carries an HTTP status or a broker concept; the service layer
decides what they mean (a ``StaleClaim`` on confirm, for instance, means "drop it, someone
else owns the row").
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, NoReturn
from uuid import UUID

from outbox_relay.retry import (  # the policy the relay runs
    DEAD_BLOCKS_SESSION,
    DEFAULT_POLICY,
    MAX_ERROR_CHARS,
    InvalidArgument,
    RetryPolicy,
    backoff_delay,
)

__all__ = [
    "DEAD_BLOCKS_SESSION",
    "DEFAULT_POLICY",
    "MAX_ERROR_CHARS",
    "TOKEN_EVENTS",
    "TRANSITIONS",
    "Claim",
    "Confirmed",
    "Event",
    "EventType",
    "Failed",
    "IllegalTransition",
    "InvalidArgument",
    "LeaseHeld",
    "NotClaimable",
    "NotDue",
    "OutboxError",
    "OutboxRow",
    "Released",
    "Requeue",
    "RetryPolicy",
    "RowState",
    "StaleClaim",
    "TransitionRefused",
    "apply",
    "backoff_delay",
    "publishable_in_order",
]


# --------------------------------------------------------------------------------------------
# Exceptions


class OutboxError(Exception):
    """Base of every error raised by the outbox rules."""


class TransitionRefused(OutboxError):
    """The row cannot take this event in its current state."""

    def __init__(self, row_id: int, state: RowState, event: EventType, detail: str) -> None:
        super().__init__(f"outbox row {row_id} ({state.value}) refuses {event.value}: {detail}")
        self.row_id = row_id
        self.state = state
        self.event = event
        self.detail = detail


class IllegalTransition(TransitionRefused):
    """The state has no transition for this event at all."""


class NotClaimable(TransitionRefused):
    """The state can be claimed, but not at this moment."""


class NotDue(NotClaimable):
    """A pending row whose ``next_retry_at`` is still in the future."""


class LeaseHeld(NotClaimable):
    """A claimed row whose lease has not expired yet."""


class StaleClaim(TransitionRefused):
    """The event's claim token is not the row's current claim: the caller lost the row."""


# --------------------------------------------------------------------------------------------
# States, events, the table


class RowState(enum.StrEnum):
    """The ``status`` column; values are the strings stored in PostgreSQL."""

    PENDING = "pending"
    CLAIMED = "claimed"
    PUBLISHED = "published"
    DEAD = "dead"


class EventType(enum.StrEnum):
    CLAIM = "claim"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    RELEASED = "released"
    REQUEUE = "requeue"


PENDING: Final = RowState.PENDING
CLAIMED: Final = RowState.CLAIMED
PUBLISHED: Final = RowState.PUBLISHED
DEAD: Final = RowState.DEAD

TRANSITIONS: Final[Mapping[tuple[RowState, EventType], frozenset[RowState]]] = {
    (PENDING, EventType.CLAIM): frozenset({CLAIMED}),  # when due
    (CLAIMED, EventType.CLAIM): frozenset({CLAIMED}),  # when the lease expired
    (CLAIMED, EventType.CONFIRMED): frozenset({PUBLISHED}),
    (CLAIMED, EventType.FAILED): frozenset({PENDING, DEAD}),
    (CLAIMED, EventType.RELEASED): frozenset({PENDING}),
    (DEAD, EventType.REQUEUE): frozenset({PENDING}),
}
"""Every legal move: (state, event) -> the states it may lead to. Absent pairs are illegal."""

TOKEN_EVENTS: Final = frozenset({EventType.CONFIRMED, EventType.FAILED, EventType.RELEASED})
"""Events that act on behalf of a claim and are fenced by its token."""


def _check_time(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number, got {value!r}")


def _check_token(token: str) -> None:
    if not token:
        raise InvalidArgument("claim token must be a non-empty string")


@dataclass(frozen=True, slots=True)
class Claim:
    """Take the row for ``lease_seconds`` under a fresh, unique ``token``."""

    kind: ClassVar[EventType] = EventType.CLAIM
    now: float
    lease_seconds: float
    token: str

    def __post_init__(self) -> None:
        _check_time("now", self.now)
        _check_time("lease_seconds", self.lease_seconds)
        if self.lease_seconds <= 0:
            raise InvalidArgument(f"lease_seconds must be > 0, got {self.lease_seconds!r}")
        _check_token(self.token)


@dataclass(frozen=True, slots=True)
class Confirmed:
    """The broker confirmed the publish made under ``token``."""

    kind: ClassVar[EventType] = EventType.CONFIRMED
    token: str
    now: float

    def __post_init__(self) -> None:
        _check_token(self.token)
        _check_time("now", self.now)


@dataclass(frozen=True, slots=True)
class Failed:
    """The publish made under ``token`` failed with ``error``; ``rng`` draws the jitter."""

    kind: ClassVar[EventType] = EventType.FAILED
    token: str
    now: float
    error: str
    rng: Callable[[], float] = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_token(self.token)
        _check_time("now", self.now)


@dataclass(frozen=True, slots=True)
class Released:
    """The holder of ``token`` gives the row back without having published it."""

    kind: ClassVar[EventType] = EventType.RELEASED
    token: str

    def __post_init__(self) -> None:
        _check_token(self.token)


@dataclass(frozen=True, slots=True)
class Requeue:
    """Operator command: send a dead row round again, due at ``now``."""

    kind: ClassVar[EventType] = EventType.REQUEUE
    now: float

    def __post_init__(self) -> None:
        _check_time("now", self.now)


Event = Claim | Confirmed | Failed | Released | Requeue


# --------------------------------------------------------------------------------------------
# The row


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """The rule-relevant columns of one ``chat_message_outbox`` row (payload left out)."""

    id: int
    session_id: UUID | None
    status: RowState
    retry_count: int
    next_retry_at: float
    claim_token: str | None = None
    lease_until: float | None = None
    last_error: str | None = None
    sent_at: float | None = None

    def __post_init__(self) -> None:
        try:
            # Accept the column's plain string too ("pending"), so ``is`` comparisons hold.
            object.__setattr__(self, "status", RowState(self.status))
        except ValueError:
            raise InvalidArgument(f"unknown status {self.status!r}") from None
        if self.retry_count < 0:
            raise InvalidArgument(f"retry_count must be >= 0, got {self.retry_count!r}")
        _check_time("next_retry_at", self.next_retry_at)
        claimed = self.status is CLAIMED
        if claimed != (self.claim_token is not None) or claimed != (self.lease_until is not None):
            raise InvalidArgument(
                f"row {self.id}: claim_token and lease_until must be set exactly when claimed"
                f" (status {self.status.value})"
            )
        if self.claim_token is not None:
            _check_token(self.claim_token)
        if self.lease_until is not None:
            _check_time("lease_until", self.lease_until)
        if (self.status is PUBLISHED) != (self.sent_at is not None):
            raise InvalidArgument(
                f"row {self.id}: sent_at must be set exactly when published"
                f" (status {self.status.value})"
            )
        if self.sent_at is not None:
            _check_time("sent_at", self.sent_at)

    @classmethod
    def new(cls, id: int, session_id: UUID | None, now: float) -> OutboxRow:
        """A freshly inserted row: pending, no attempts, due at ``now``."""
        return cls(id=id, session_id=session_id, status=PENDING, retry_count=0, next_retry_at=now)

    def lease_expired(self, now: float) -> bool:
        """True for a claimed row whose lease has run out at ``now``."""
        return self.lease_until is not None and self.lease_until <= now

    def claimable(self, now: float) -> bool:
        """Whether ``Claim`` at ``now`` would succeed."""
        if self.status is PENDING:
            return self.next_retry_at <= now
        return self.status is CLAIMED and self.lease_expired(now)

    def eligible(self, now: float, token: str | None = None) -> bool:
        """Claimable at ``now``, or already claimed by ``token`` (the caller's own claim)."""
        if token is not None and self.status is CLAIMED and self.claim_token == token:
            return True
        return self.claimable(now)


# --------------------------------------------------------------------------------------------
# Transitions


def _refuse(cls: type[TransitionRefused], row: OutboxRow, event: Event, detail: str) -> NoReturn:
    raise cls(row.id, row.status, event.kind, detail)


def _check_fence(row: OutboxRow, event: Confirmed | Failed | Released) -> None:
    if row.status is not CLAIMED:
        _refuse(StaleClaim, row, event, "the row is not claimed; the claim was lost")
    if row.claim_token != event.token:
        _refuse(StaleClaim, row, event, "the row is claimed under another token")


def _on_claim(row: OutboxRow, event: Claim, policy: RetryPolicy) -> OutboxRow:
    if row.status is PENDING and row.next_retry_at > event.now:
        _refuse(NotDue, row, event, f"next_retry_at {row.next_retry_at} > now {event.now}")
    if row.status is CLAIMED:
        if not row.lease_expired(event.now):
            _refuse(LeaseHeld, row, event, f"lease_until {row.lease_until} > now {event.now}")
        if row.claim_token == event.token:
            raise InvalidArgument(f"row {row.id}: claim token reused; tokens must be unique")
    return dataclasses.replace(
        row,
        status=CLAIMED,
        claim_token=event.token,
        lease_until=event.now + event.lease_seconds,
    )


def _on_confirmed(row: OutboxRow, event: Confirmed, policy: RetryPolicy) -> OutboxRow:
    _check_fence(row, event)
    return dataclasses.replace(
        row, status=PUBLISHED, claim_token=None, lease_until=None, sent_at=event.now
    )


def _on_failed(row: OutboxRow, event: Failed, policy: RetryPolicy) -> OutboxRow:
    _check_fence(row, event)
    attempts = row.retry_count + 1
    error = event.error[:MAX_ERROR_CHARS]
    if attempts >= policy.max_attempts:
        return dataclasses.replace(
            row,
            status=DEAD,
            retry_count=attempts,
            claim_token=None,
            lease_until=None,
            last_error=error,
        )
    return dataclasses.replace(
        row,
        status=PENDING,
        retry_count=attempts,
        next_retry_at=event.now + backoff_delay(attempts, policy, event.rng),
        claim_token=None,
        lease_until=None,
        last_error=error,
    )


def _on_released(row: OutboxRow, event: Released, policy: RetryPolicy) -> OutboxRow:
    _check_fence(row, event)
    return dataclasses.replace(row, status=PENDING, claim_token=None, lease_until=None)


def _on_requeue(row: OutboxRow, event: Requeue, policy: RetryPolicy) -> OutboxRow:
    return dataclasses.replace(row, status=PENDING, retry_count=0, next_retry_at=event.now)


def apply(row: OutboxRow, event: Event, policy: RetryPolicy = DEFAULT_POLICY) -> OutboxRow:
    """The row after ``event``, or a :class:`TransitionRefused` saying why not.

    The input row is never modified. ``policy`` only matters for :class:`Failed`.
    """
    targets = TRANSITIONS.get((row.status, event.kind))
    if targets is None:
        if isinstance(event, Confirmed | Failed | Released):
            _check_fence(row, event)  # always raises here: the row is not claimed
        _refuse(IllegalTransition, row, event, "no such transition")
    match event:
        case Claim():
            result = _on_claim(row, event, policy)
        case Confirmed():
            result = _on_confirmed(row, event, policy)
        case Failed():
            result = _on_failed(row, event, policy)
        case Released():
            result = _on_released(row, event, policy)
        case Requeue():
            result = _on_requeue(row, event, policy)
    if result.status not in targets:  # pragma: no cover - guards the table against the code
        raise AssertionError(f"{row.status} --{event.kind}--> {result.status} is not in the table")
    return result


# --------------------------------------------------------------------------------------------
# Per-session order


def publishable_in_order(
    candidates: Sequence[OutboxRow],
    blocked: Collection[UUID | None],
    *,
    now: float,
    token: str | None = None,
) -> list[OutboxRow]:
    """The candidates that may be published now without breaking per-session order.

    ``candidates`` are sorted by strictly increasing ``id`` (anything else raises
    :class:`InvalidArgument`). A row is eligible when it is claimable at ``now`` or is already
    claimed by ``token``. For each session, rows are taken in id order up to, not including,
    its first row that is not eligible (not due yet, or claimed by someone else under a live
    lease). PUBLISHED rows are skipped, and so are DEAD rows, which do not block the session
    (:data:`DEAD_BLOCKS_SESSION`). Nothing of a session in ``blocked`` is taken: the caller
    lists there the sessions with an earlier unpublished row it did not pass in (for example
    one locked by another relay and skipped by ``SKIP LOCKED``). Rows whose ``session_id`` is
    ``None`` are unordered: each is taken when eligible, unless ``None`` is in ``blocked``.

    The guarantee holds relative to what is passed in: for every session, either all of its
    unpublished rows older than its newest candidate are among ``candidates``, or the session
    is in ``blocked``.
    """
    _check_time("now", now)
    stopped: set[UUID] = set()
    taken: list[OutboxRow] = []
    previous_id: int | None = None
    for row in candidates:
        if previous_id is not None and row.id <= previous_id:
            raise InvalidArgument(
                f"candidates must be sorted by strictly increasing id ({previous_id}, {row.id})"
            )
        previous_id = row.id
        session = row.session_id
        if session in blocked or (session is not None and session in stopped):
            continue
        if row.status is PUBLISHED or row.status is DEAD:
            continue
        if row.eligible(now, token):
            taken.append(row)
        elif session is not None:
            stopped.add(session)
    return taken
