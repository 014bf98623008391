"""The seam between replayed history and live events of one subscription (pure).

While a subscription with ``x-resume-after-seq`` replays history, live events are buffered;
when the replay ends, the buffer is released without the messages already replayed. Message
events are also dropped whenever their seq is not above the last one delivered, so the client
sees each seq once, in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class ResumeOverflow(Exception):
    """More live events arrived during a replay than the buffer may hold."""


@dataclass
class _Held(Generic[T]):
    seq: int | None
    item: T


class SeqGate(Generic[T]):
    def __init__(self, after_seq: int | None, max_buffer: int = 10_000) -> None:
        self.last_seq = after_seq or 0
        self.replaying = after_seq is not None
        self._buffer: list[_Held[T]] = []
        self._max = max_buffer

    @property
    def held(self) -> int:
        """Live events waiting for the replay to end."""
        return len(self._buffer)

    def admit(self, seq: int | None) -> bool:
        """Whether a replayed message (or a live one, once live) is new; records it."""
        if seq is None:
            return True
        if seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True

    def live(self, seq: int | None, item: T) -> list[T]:
        """A live event: held during the replay, else passed on unless already seen."""
        if self.replaying:
            if len(self._buffer) >= self._max:
                raise ResumeOverflow("too many live events during the replay")
            self._buffer.append(_Held(seq, item))
            return []
        return [item] if self.admit(seq) else []

    def finish(self) -> list[T]:
        """The replay is over: release what was held, minus what the replay covered."""
        self.replaying = False
        held, self._buffer = self._buffer, []
        return [h.item for h in held if self.admit(h.seq)]
