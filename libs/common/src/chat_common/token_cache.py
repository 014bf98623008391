"""Tokens already verified, remembered by their exact text while they stay valid.

Every API call and every STOMP connection carries a JWT that the gateway and then a service
verify; the RSA check and the claim parsing are a large share of a small request's CPU. A token
seen before is looked up here instead: same text, same claims. An entry ends at the token's own
expiry (with the verifier's leeway) or after ``ttl`` seconds, whichever comes first, so a key
withdrawn from the JWKS stops admitting its tokens within ``ttl``; the verifier also empties the
cache whenever it reloads its keys. Bounded: the least recently used entries go first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class VerifiedTokens(Generic[T]):
    def __init__(
        self, capacity: int = 4096, ttl: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        if capacity < 0 or ttl < 0:
            raise ValueError("capacity and ttl must be >= 0")
        self._capacity = capacity
        self._ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, tuple[T, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> T | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        value, until = entry
        if self._clock() >= until:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return value

    def put(self, token: str, value: T, valid_until: float) -> None:
        """Remember ``value`` for ``token`` until ``valid_until`` (wall-clock seconds), or for
        ``ttl`` seconds at most."""
        if self._capacity == 0:
            return
        until = min(valid_until, self._clock() + self._ttl)
        if until <= self._clock():
            return
        self._entries[token] = (value, until)
        self._entries.move_to_end(token)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
