"""A connection's bounded outbound buffer (pure).

Frames wait here between the STOMP core and the socket. The buffer counts bytes, not frames;
when a client reads slower than the edge produces, the buffer refuses the next frames instead
of growing, and the caller disconnects the client (``Disconnect.SLOW_CONSUMER``). What a
refused buffer held is dropped at once: memory is given back before the socket is closed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class OutboundBuffer:
    __slots__ = ("_chunks", "_max", "overflowed", "size")

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self._chunks: deque[bytes] = deque()
        self._max = max_bytes
        self.size = 0
        self.overflowed = False

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def __len__(self) -> int:
        return len(self._chunks)

    def extend(self, chunks: Iterable[bytes]) -> bool:
        """Queue ``chunks``; False (and everything dropped, for good) when over the cap."""
        if self.overflowed:
            return False
        for chunk in chunks:
            self._chunks.append(chunk)
            self.size += len(chunk)
        if self.size > self._max:
            self.overflowed = True
            self._chunks.clear()
            self.size = 0
            return False
        return True

    def pop(self) -> bytes | None:
        """The oldest chunk, or None when empty."""
        if not self._chunks:
            return None
        chunk = self._chunks.popleft()
        self.size -= len(chunk)
        return chunk

    def clear(self) -> None:
        self._chunks.clear()
        self.size = 0
