"""The seq order of one ``/topic/session.{id}`` subscription (pure).

Every message event of a session carries its ``seq``; the gate keeps the last one the client
got and lets the client see each seq once, in order, with no gap:

- a message at or below the last one delivered is a duplicate: dropped;
- the next one (last + 1) goes straight through;
- one further ahead opens a gap: it is held, and the gate asks the caller to fetch the missing
  range from the stored history (:meth:`SeqGate.take_fetch`);
- while a fetch runs (the ``x-resume-after-seq`` replay is a fetch with no upper end) every
  live event is held; fetched messages go through :meth:`SeqGate.admit`, and
  :meth:`SeqGate.finish` releases what was held, messages in seq order minus what the fetch
  carried. A held message beyond a new gap opens the next fetch and stays held with those
  after it. :meth:`SeqGate.give_up` ends a fetch that could not get its range: the client
  gets what there is rather than a subscription stuck behind a hole.

Without a resume point the first message delivered sets the mark. Events without a seq
(receipts, typing, presence) are never dropped: they pass, or wait with the rest while a
fetch runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Generic, TypeVar

T = TypeVar("T")

MAX_SEQ = 2**62
"""The largest seq message-svc accepts in a history query."""
RESUME_HEADER: Final = "x-resume-after-seq"
"""The SUBSCRIBE header naming the last seq the client has (:func:`resume_point` reads it)."""


class ResumeOverflow(Exception):
    """More live events arrived during a fetch than the buffer may hold."""


@dataclass(frozen=True, slots=True)
class Fetch:
    """Stored messages with ``after < seq <= up_to`` (no upper end when ``up_to`` is None)."""

    after: int
    up_to: int | None = None


@dataclass(frozen=True, slots=True)
class _Held(Generic[T]):
    seq: int | None
    item: T


def resume_point(value: str) -> int | None:
    """The seq of an ``x-resume-after-seq`` header; None unless it is a plain decimal
    number (ASCII digits only) between 0 and :data:`MAX_SEQ`."""
    if not (value.isascii() and value.isdigit()) or len(value) > len(str(MAX_SEQ)):
        return None
    seq = int(value)
    return seq if seq <= MAX_SEQ else None


class SeqGate(Generic[T]):
    """One subscription's seq order; ``T`` is whatever the caller delivers (an encoded frame).

    ``last_seq`` is the last message seq delivered (None before the first one);
    ``fetching`` the range being fetched, while live events are held."""

    __slots__ = ("_buffer", "_max", "_pending", "fetching", "last_seq")

    def __init__(self, after_seq: int | None, max_buffer: int = 10_000) -> None:
        self.last_seq = after_seq
        self.fetching = Fetch(after_seq) if after_seq is not None else None
        self._pending = self.fetching
        self._buffer: list[_Held[T]] = []
        self._max = max_buffer

    @property
    def held(self) -> int:
        """Live events waiting for the fetch to end."""
        return len(self._buffer)

    def take_fetch(self) -> Fetch | None:
        """The range the caller should fetch now, once (None: nothing to fetch)."""
        fetch, self._pending = self._pending, None
        return fetch

    def live(self, seq: int | None, item: T) -> list[T]:
        """A live event: what to deliver now (held while a fetch runs or a gap opens)."""
        if self.fetching is not None:
            if len(self._buffer) >= self._max:
                raise ResumeOverflow("too many live events held")
            self._buffer.append(_Held(seq, item))
            return []
        return self._pass(_Held(seq, item))

    def admit(self, seq: int) -> bool:
        """Whether a fetched message is new (and inside the range fetched); records it."""
        fetch = self.fetching
        if fetch is not None and fetch.up_to is not None and seq > fetch.up_to:
            return False
        if self.last_seq is not None and seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True

    @property
    def complete(self) -> bool:
        """Whether the fetch running has delivered its whole range."""
        fetch = self.fetching
        if fetch is None or fetch.up_to is None:
            return True
        return self.last_seq is not None and self.last_seq >= fetch.up_to

    def finish(self) -> list[T]:
        """The fetch is over: release what was held, minus what the fetch carried."""
        self.fetching = None
        held, self._buffer = self._ordered(self._buffer), []
        released: list[T] = []
        for index, one in enumerate(held):
            released += self._pass(one)
            if self._gap_opened():  # the rest waits with the message that opened it
                self._buffer += held[index + 1 :]
                break
        return released

    def give_up(self) -> list[T]:
        """The fetch could not get its range: skip what is still missing, up to the first
        held message, and release as :meth:`finish` does."""
        fetch, last = self.fetching, self.last_seq
        if fetch is not None and fetch.up_to is not None:
            waiting = [h.seq - 1 for h in self._buffer if h.seq is not None]
            skip_to = min([fetch.up_to, *(s for s in waiting if last is None or s >= last)])
            if last is None or skip_to > last:
                self.last_seq = skip_to
        return self.finish()

    def _pass(self, held: _Held[T]) -> list[T]:
        seq, last = held.seq, self.last_seq
        if seq is None:
            return [held.item]
        if last is not None and seq <= last:
            return []
        if last is not None and seq > last + 1:
            self.fetching = self._pending = Fetch(last, seq - 1)
            self._buffer.append(held)
            return []
        self.last_seq = seq
        return [held.item]

    def _gap_opened(self) -> bool:
        return self.fetching is not None

    @staticmethod
    def _ordered(held: list[_Held[T]]) -> list[_Held[T]]:
        """Held events in arrival order, the messages among them sorted by seq."""
        messages = iter(sorted((h for h in held if h.seq is not None), key=_seq_of))
        return [h if h.seq is None else next(messages) for h in held]


def _seq_of(held: _Held[T]) -> int:
    assert held.seq is not None
    return held.seq
