"""Group commit: concurrent sends stored by one statement in one transaction.

A send hands its draft to :meth:`GroupCommit.enqueue` and awaits the answer. When no batch is
being written, the waiting drafts go as one batch; while a batch is being written, new drafts
wait and go together as the next one (at most ``max_batch`` each). Under load, batches
therefore grow with the rate and the database commits once per batch instead of once per
message. Besides, while sends arrive faster than the pacing's busy rate
(:mod:`chat_common.batching`), the next batch waits until a window after the previous one
started, to gather more (or until it is full); below that rate a send goes at once, so light
load waits for nothing. With
``max_flushes`` 1 (the default), batches are written one after the other, so drafts enqueued
in order are stored in that order (a bulk send's items keep their order).

Within a batch, a draft whose sender and client id equal an earlier draft's is not written: it
gets the earlier one's outcome as a replay. Each caller is answered only after the commit. If
a concurrent transaction stored one of the batch's client ids first, the batch is written again
(that draft then comes back as the earlier message); if the batch fails otherwise, every caller
of the batch gets the error and nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Histogram

from chat_common.batching import Pacing, PacingPolicy

from .repository import ClientIdTaken, Draft

log = logging.getLogger(__name__)

BATCH_SIZE = Histogram(
    "chat_send_batch_size",
    "Messages per group-commit batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)

# write(drafts) -> for each index, the stored row or the sender's earlier one (key "new"),
# a record or a mapping
Write = Callable[[Sequence[Draft]], Awaitable[Mapping[int, Any]]]


@dataclass(frozen=True, slots=True)
class Stored:
    row: Any  # a stored message (record or mapping)
    new: bool  # False: the sender's earlier message with this client id; nothing was written


class SessionGone(Exception):
    """The draft's session no longer exists; nothing was written for it."""


class GroupCommit:
    def __init__(
        self,
        write: Write,
        *,
        max_batch: int = 256,
        max_flushes: int = 1,
        attempts: int = 3,
        pacing: PacingPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._max_flushes = max_flushes
        self._attempts = attempts
        self._pacing = Pacing(pacing or PacingPolicy(max_window=0.0))
        self._clock = clock
        self._waiting: list[tuple[Draft, asyncio.Future[Stored]]] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._last_flush = -float("inf")  # when the last batch started
        self._timer: asyncio.TimerHandle | None = None

    def enqueue(self, draft: Draft) -> asyncio.Future[Stored]:
        """Queue ``draft`` (synchronously: drafts enqueued in order are stored in order)."""
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._waiting.append((draft, future))
        self._pacing.arrived(self._clock())
        self._start()
        return future

    async def store(self, draft: Draft) -> Stored:
        return await asyncio.shield(self.enqueue(draft))

    async def close(self) -> None:
        """Wait for the batches under way and what is still queued."""
        while self._flushing or self._waiting:
            if self._timer is not None:  # no more gathering: what waits goes now
                self._timer.cancel()
                self._timer = None
                self._last_flush = -float("inf")
            if self._flushing:
                await asyncio.gather(*self._flushing, return_exceptions=True)
            else:
                self._start()
                await asyncio.sleep(0)

    def _start(self) -> None:
        if self._timer is not None:
            if len(self._waiting) < self._max_batch:
                return  # a busy spell's batch is being gathered; the timer starts it
            self._timer.cancel()  # full already: no need to wait any longer
            self._timer = None
            self._last_flush = -float("inf")
        while self._waiting and len(self._flushing) < self._max_flushes:
            now = self._clock()
            due = self._last_flush + self._pacing.window(now)
            if now < due and len(self._waiting) < self._max_batch:
                # Busy: sends arrive fast and a batch started less than a window ago, so more
                # are on their way; gather them until the window is over (or the batch is
                # full).
                self._timer = asyncio.get_running_loop().call_later(due - now, self._gathered)
                return
            self._last_flush = now
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            task = asyncio.create_task(self._flush(batch))
            self._flushing.add(task)
            task.add_done_callback(self._done)

    def _gathered(self) -> None:
        self._timer = None
        self._start()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        self._start()

    async def _flush(self, batch: list[tuple[Draft, asyncio.Future[Stored]]]) -> None:
        leaders: list[Draft] = []
        first: dict[tuple[str, Any], int] = {}  # (sender, client id) -> index among leaders
        followers: list[tuple[int, asyncio.Future[Stored]]] = []
        owners: list[asyncio.Future[Stored]] = []
        for draft, future in batch:
            key = (draft.sender.user_email, draft.client_msg_id)
            index = first.get(key)
            if index is None:
                first[key] = len(leaders)
                leaders.append(draft)
                owners.append(future)
            else:
                followers.append((index, future))
        BATCH_SIZE.observe(len(leaders))
        try:
            rows = await self._write_with_retries(leaders)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved, even when its caller has gone
            return
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        for index, future in enumerate(owners):
            row = rows.get(index)
            _settle(future, Stored(row, bool(row["new"])) if row is not None else None)
        for index, future in followers:
            row = rows.get(index)
            _settle(future, Stored(row, False) if row is not None else None)

    async def _write_with_retries(self, drafts: Sequence[Draft]) -> Mapping[int, Any]:
        for _ in range(self._attempts - 1):
            try:
                return await self._write(drafts)
            except ClientIdTaken:
                log.info("a client id of the batch was stored meanwhile; writing it again")
        return await self._write(drafts)


def _settle(future: asyncio.Future[Stored], stored: Stored | None) -> None:
    if future.done():
        return
    if stored is None:
        future.set_exception(SessionGone())
        future.exception()
    else:
        future.set_result(stored)
