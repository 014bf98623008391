"""Wakes the outbox relays after commits, coalesced: at most one NOTIFY in flight per process,
and one more if commits happened while it was. A lost wake-up costs at most the relays' poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from . import repository

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._running: asyncio.Task[None] | None = None
        self._again = False

    def poke(self) -> None:
        """Call after a commit that added outbox rows."""
        if self._running is not None and not self._running.done():
            self._again = True
            return
        self._running = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while True:
            self._again = False
            try:
                async with self._pool.acquire() as conn:
                    await repository.notify(conn)
            except Exception as exc:  # the relays' poll picks the rows up
                log.warning("NOTIFY failed: %s", exc)
            if not self._again:
                return

    async def close(self) -> None:
        if self._running is not None:
            with contextlib.suppress(Exception):
                await self._running
