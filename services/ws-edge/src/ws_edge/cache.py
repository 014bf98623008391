"""A small bounded cache with a lifetime per entry (pure; the clock is an argument).

Used for membership answers: a "yes" is kept longer than a "no", so a user who just joined a
session waits a few seconds at most, and a flood of look-ups cannot grow memory past
``max_entries`` (the least recently stored entries go first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Hit(Generic[V]):
    value: V


class TtlCache(Generic[K, V]):
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._max = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: float) -> Hit[V] | None:
        """The value stored for ``key`` if it has not expired at ``now``, else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        return Hit(entry[1])

    def discard_where(self, match: Callable[[K], bool]) -> int:
        """Forget every entry whose key ``match``es (a walk of the whole cache: for rare
        changes, such as a blocked session); how many went."""
        gone = [key for key in self._entries if match(key)]
        for key in gone:
            del self._entries[key]
        return len(gone)

    def put(self, key: K, value: V, ttl: float, now: float) -> None:
        self._entries[key] = (now + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
