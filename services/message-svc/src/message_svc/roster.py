"""Who is in a session, cached: a session's two participants never change once it exists, so
the send path asks PostgreSQL once per session and then answers from memory.

An entry lives ``ttl`` seconds, which bounds how long a change to a session can go unnoticed
by sends when nobody tells the roster; a block is told (``forget``, from
:mod:`message_svc.sessionwatch`), so it takes effect at once. An unknown session is not cached.
Concurrent askers for one session share one query; at most ``max_entries`` sessions are held
(the least recently used go first). The marks a cached :class:`Member` carries are those of
when it was read: the send path does not use them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from .repository import Member

Load = Callable[[uuid.UUID], Awaitable[list[Member]]]


class Roster:
    def __init__(
        self,
        load: Load,
        *,
        ttl: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[uuid.UUID, tuple[float, list[Member]]] = OrderedDict()
        self._loading: dict[uuid.UUID, asyncio.Future[list[Member]]] = {}
        self._stale: set[uuid.UUID] = set()  # loads under way when their session changed

    def forget(self, session_id: uuid.UUID) -> None:
        """Read the session again at its next use (it changed: a block or an unblock). A
        load under way was read before the change: it answers its askers but is not kept."""
        self._entries.pop(session_id, None)
        if session_id in self._loading:
            self._stale.add(session_id)

    def forget_all(self) -> None:
        self._entries.clear()
        self._stale.update(self._loading)

    async def members(self, session_id: uuid.UUID) -> list[Member]:
        """The session's participants; empty when it does not exist."""
        entry = self._entries.get(session_id)
        if entry is not None:
            expires, members = entry
            if self._clock() < expires:
                self._entries.move_to_end(session_id)
                return members
            del self._entries[session_id]
        pending = self._loading.get(session_id)
        while pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
            pending = self._loading.get(session_id)  # its loader was cancelled: load again
        future: asyncio.Future[list[Member]] = asyncio.get_running_loop().create_future()
        self._loading[session_id] = future
        try:
            members = await self._load(session_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the askers that shared it get it raised
            raise
        finally:
            del self._loading[session_id]
            stale = session_id in self._stale
            self._stale.discard(session_id)
        future.set_result(members)
        if members and not stale:
            self._entries[session_id] = (self._clock() + self._ttl, members)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return members
