"""What one publish round means for each row of a claimed batch. Pure code, no I/O.

A round ends with one :class:`Outcome` per row:

* ``CONFIRMED``: the broker acked it;
* ``FAILED``: the row's own fault (nacked, names a missing exchange, cannot be encoded); it
  counts an attempt;
* ``UNKNOWN``: sent, but the channel or the connection went away, or no confirm came in time;
  nobody knows whether it got through, and it is nobody's fault: no attempt is counted;
* ``NOT_SENT``: never written to the broker.

:func:`settle` turns the outcomes into what the relay writes back, session by session in id
order: rows are published up to the first row of the session that is not confirmed; that row
is failed (``FAILED``) or released (anything else); every later row of the session is
released. The publisher sends a session's rows in :func:`waves`, so a later row is never sent
before the row ahead of it was confirmed; should one have been confirmed anyway (a publisher
that pipelines), it is released too and goes out again after the row before it, so the last
copy a consumer sees still comes in session order. Rows without a session are independent of
each other.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar
from uuid import UUID


class Verdict(enum.Enum):
    CONFIRMED = "confirmed"
    FAILED = "failed"
    UNKNOWN = "unknown"
    NOT_SENT = "not sent"


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    error: str = ""


CONFIRMED = Outcome(Verdict.CONFIRMED)
NOT_SENT = Outcome(Verdict.NOT_SENT)


def failed(error: str) -> Outcome:
    return Outcome(Verdict.FAILED, error)


def unknown(error: str) -> Outcome:
    return Outcome(Verdict.UNKNOWN, error)


class Row(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def session_id(self) -> UUID | None: ...


R = TypeVar("R", bound=Row)


@dataclass(slots=True)
class Settlement(Generic[R]):
    published: list[R] = field(default_factory=list)
    failed: list[tuple[R, str]] = field(default_factory=list)
    released: list[R] = field(default_factory=list)
    # confirmed, but released behind an earlier row of its session: will go out again
    overtaken: list[R] = field(default_factory=list)


def session_key(row: Row) -> UUID | int:
    """Rows of one session share a key; a row without a session is alone under its id."""
    return row.session_id if row.session_id is not None else row.id


def waves(rows: Sequence[R]) -> list[list[R]]:
    """The rows in publish waves: the first row (in id order) of every session, then the
    second of every session that has one, and so on. A wave is sent only once the broker
    confirmed the one before, and a row only if the rows before it in its session were
    confirmed: a row is never sent while an earlier row of its session is unconfirmed. Rows
    without a session all go in the first wave."""
    result: list[list[R]] = []
    depth: dict[UUID | int, int] = {}
    for row in sorted(rows, key=lambda r: r.id):
        key = session_key(row)
        index = depth.get(key, 0)
        depth[key] = index + 1
        if index == len(result):
            result.append([])
        result[index].append(row)
    return result


def settle(rows: Sequence[R], outcomes: Mapping[int, Outcome]) -> Settlement[R]:
    """Sort the rows (in id order) into published, failed and released; a row without an
    outcome counts as ``NOT_SENT``."""
    result: Settlement[R] = Settlement()
    broken: set[UUID | int] = set()
    for row in sorted(rows, key=lambda r: r.id):
        outcome = outcomes.get(row.id, NOT_SENT)
        key = session_key(row)
        if key in broken:
            result.released.append(row)
            if outcome.verdict is Verdict.CONFIRMED:
                result.overtaken.append(row)
            continue
        if outcome.verdict is Verdict.CONFIRMED:
            result.published.append(row)
            continue
        broken.add(key)
        if outcome.verdict is Verdict.FAILED:
            result.failed.append((row, outcome.error))
        else:
            result.released.append(row)
    return result
