"""The relay loop: wake on NOTIFY (or the poll), claim, publish with confirms, write back;
repeat until the backlog is drained. Around it: the LISTEN connection, backlog metrics, the
rotation of the outbox's partitions.

A round is one transaction (:mod:`outbox_relay.repository`): the rows are locked by the
claim, published, and deleted (or pushed back, or buried) before the commit; rows the round
could not publish are simply let go with the transaction. Stopping (:meth:`Relay.stop`) lets
the round in hand finish within the grace (a publish round is bounded by
``publish_timeout_seconds``); past it the round is cut short and its transaction rolled back,
so no row stays held; a commit under way is never cut short, only bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import asyncpg
from asyncpg.transaction import Transaction

from chat_common import db
from chat_common.batching import Pacing
from chat_common.db import Conn
from chat_common.errors import BrokerUnavailable, DatabaseUnavailable

from . import batch, metrics, repository
from .publisher import Publisher, Round
from .repository import Claimed
from .retry import Bury, RetryPolicy, after_failure
from .settings import SHUTDOWN_MARGIN_SECONDS, Settings

log = logging.getLogger(__name__)

# Once the shutdown grace runs out, half of SHUTDOWN_MARGIN_SECONDS is left to a write-back
# under way, or to rolling back a round cut short.
FINISH_SECONDS: Final = SHUTDOWN_MARGIN_SECONDS / 2


class Relay:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, publisher: Publisher) -> None:
        self._settings = settings
        self._pool = pool
        self._publisher = publisher
        self._policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            base_delay=settings.retry_base_seconds,
            max_delay=settings.retry_max_seconds,
        )
        self._pacing = Pacing(settings.pacing())
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._next_due: float | None = None  # monotonic: when a row this relay failed is due
        self.listening = False
        self.listens = 0  # successful LISTENs so far (reconnections show up here)
        self.published = 0  # rows this relay published and deleted

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not self._tasks[0].done()

    async def start(self) -> None:
        s = self._settings
        self._tasks = [
            asyncio.create_task(self._run(), name="outbox-relay"),
            asyncio.create_task(self._listen(), name="outbox-listen"),
            asyncio.create_task(self._every(s.stats_interval_seconds, self.refresh_stats)),
            asyncio.create_task(self._every(s.rotate_check_seconds, self.maintain)),
        ]

    async def stop(self) -> None:
        """Stop claiming; let the round in hand finish, or cut it short (its transaction rolls
        back, so its rows are free at once). Within ``shutdown_grace_seconds``."""
        self._stopping.set()
        self._wake.set()
        if not self._tasks:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.shutdown_grace_seconds
        main, *others = self._tasks
        for task in others:
            task.cancel()
        # A full round fits here: the settings keep the grace above the publish timeout plus
        # SHUTDOWN_MARGIN_SECONDS.
        await asyncio.wait(
            {main}, timeout=max(0.0, deadline - SHUTDOWN_MARGIN_SECONDS - loop.time())
        )
        if not main.done():
            log.warning("the round in hand outlived the shutdown grace; cutting it short")
            main.cancel()  # a commit under way is shielded: it gets FINISH_SECONDS
            await asyncio.wait({main}, timeout=FINISH_SECONDS + 0.1)
        await asyncio.wait(self._tasks, timeout=max(0.1, deadline - loop.time()))
        for task in self._tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: the loops log their own faults
        if main.done():
            log.info("relay stopped; no row left held")
        else:
            log.warning(
                "relay stopped with a round still open; its rows are freed when the"
                " connection closes"
            )

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        broker_delay = 0.1
        last_round = -float("inf")
        while not self._stopping.is_set():
            # Under load (rows coming fast lately), the next round waits out the pacing's
            # window after the previous one, so that rows committed meanwhile go in it (fewer,
            # larger rounds); at light load a round starts at once.
            now = time.monotonic()
            pause = last_round + self._pacing.window(now) - now
            if pause > 0:
                await self._sleep(pause)
            last_round = time.monotonic()
            self._wake.clear()
            try:
                if not self._publisher.connected:
                    await self._publisher.connect()
                    if self._stopping.is_set():
                        break
                drained = await self.step()
                broker_delay = 0.1
            except BrokerUnavailable as exc:
                log.warning("RabbitMQ unavailable (%s); rows wait in the outbox", exc)
                await self._sleep(broker_delay)
                broker_delay = min(2.0, broker_delay * 2)
                continue
            except DatabaseUnavailable as exc:
                log.warning("PostgreSQL unavailable (%s); retrying", exc)
                await self._sleep(1.0)
                continue
            except Exception:
                log.exception("relay step failed; retrying")
                await self._sleep(1.0)
                continue
            if drained:
                await self._idle()

    async def _idle(self) -> None:
        """Until a NOTIFY, the poll interval, or the moment a row this relay failed is due."""
        timeout = self._settings.poll_interval_seconds
        if self._next_due is not None:
            until_due = self._next_due - time.monotonic()
            if until_due <= 0:  # due already: claim once more, then forget it
                self._next_due = None
            timeout = max(0.0, min(timeout, until_due))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def step(self) -> bool:
        """One claim-publish-write round in one transaction; True when the backlog looked
        drained."""
        if self._stopping.is_set():
            return True
        async with self._pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                asked_at = time.monotonic()
                rows = await repository.claim(conn, self._settings.batch_size)
                claimed_at = time.monotonic()
                self._pacing.arrived(claimed_at, len(rows))
                if not rows:
                    await transaction.commit()
                    return True
                if claimed_at - asked_at > self._settings.lease_seconds / 2:
                    # paused or stalled while claiming: too little of the lease is left
                    await transaction.rollback()
                    metrics.RELEASED.inc(len(rows))
                    return False
                result = await self._publisher.publish(rows)
                await self._write_back(conn, transaction, rows, result, claimed_at)
            except BaseException:
                await _roll_back(transaction)
                raise
        if result.broker_lost:
            raise BrokerUnavailable("the connection to RabbitMQ failed during a round")
        return len(rows) < self._settings.batch_size

    async def _write_back(
        self,
        conn: Conn,
        transaction: Transaction,
        rows: Sequence[Claimed],
        result: Round,
        claimed_at: float,
    ) -> None:
        """:meth:`_settle` and the commit, shielded: a stop past the grace does not cut them
        short; they get FINISH_SECONDS more, after which they are abandoned (and the
        transaction ends with the connection)."""
        writing = asyncio.ensure_future(self._settle(conn, transaction, rows, result, claimed_at))
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            if not writing.done():
                log.warning("stopping during a write-back; letting it finish")
                await asyncio.wait({writing}, timeout=FINISH_SECONDS)
            if not writing.done():
                writing.cancel()
            elif not writing.cancelled() and writing.exception() is not None:
                log.warning("the write-back failed while stopping: %s", writing.exception())
            raise

    async def _settle(
        self,
        conn: Conn,
        transaction: Transaction,
        rows: Sequence[Claimed],
        result: Round,
        claimed_at: float,
    ) -> None:
        """Write the round back and commit: delete what was confirmed, count the failures."""
        done = batch.settle(rows, result.outcomes)
        buried: list[bool] = []
        deleted = await repository.delete_published(conn, [r.id for r in done.published])
        for row, error in done.failed:
            buried.append(await self._fail(conn, row, error))
        await transaction.commit()
        dead = buried.count(True)
        self.published += deleted
        metrics.PUBLISHED.inc(deleted)
        for row in done.published:
            confirmed = result.confirmed_at.get(row.id, time.monotonic())
            metrics.LATENCY.observe(row.age_seconds + max(0.0, confirmed - claimed_at))
        metrics.RETRIES.inc(len(buried) - dead)
        metrics.DEAD.inc(dead)
        metrics.RELEASED.inc(len(done.released))
        if done.overtaken:
            log.info(
                "%d confirmed rows released behind a failed row of their session",
                len(done.overtaken),
            )

    async def _fail(self, conn: Conn, row: Claimed, error: str) -> bool:
        """Count the attempt (the retry policy: backoff, or dead); whether it was buried."""
        now = time.time()
        decision = after_failure(row.retry_count, now, error, self._policy, random.random)
        if isinstance(decision, Bury):
            await repository.bury(
                conn, row.id, retry_count=decision.retry_count, error=decision.error
            )
            log.error(
                "outbox row %s is dead after %s attempts: %s", row.id, decision.retry_count, error
            )
            return True
        delay = max(0.0, decision.next_retry_at - now)
        await repository.retry_later(
            conn,
            row.id,
            retry_count=decision.retry_count,
            delay_seconds=delay,
            error=decision.error,
        )
        log.warning("outbox row %s failed (attempt %s): %s", row.id, decision.retry_count, error)
        due = time.monotonic() + delay
        self._next_due = due if self._next_due is None else min(self._next_due, due)
        return False

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- around the loop -----------------------------------------------------------------

    async def _listen(self) -> None:
        """Keep one connection LISTENing; a NOTIFY only wakes the loop (its payload is never
        read). Notifications sent while it is down are lost, so every (re)connection wakes the
        loop once, and the poll keeps running meanwhile."""
        await db.keep_listening(
            self._settings.database_url,
            repository.CHANNEL,
            lambda *_: self._wake.set(),
            self._listening,
            application_name=self._application_name("listen"),
            meanwhile="polling",
            stop=self._stopping,
        )

    def _listening(self, now: bool) -> None:
        self.listening = now
        if now:
            self.listens += 1
            self._wake.set()  # catch up with what was committed while not listening

    def _application_name(self, role: str) -> str:
        return f"outbox-relay {role} {self._settings.instance_id}"[:63]

    async def _every(self, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
        while not self._stopping.is_set():
            try:
                await job()
            except Exception as exc:
                log.warning("%s failed: %s", getattr(job, "__name__", "job"), exc)
            await self._sleep(seconds)

    async def refresh_stats(self) -> None:
        async with self._pool.acquire() as conn:
            count, age = await repository.backlog(conn)
        metrics.PENDING.set(count)
        metrics.LAG.set(age)

    async def maintain(self) -> None:
        """End other relays' rounds that outlived the lease, then rotate the outbox."""
        async with self._pool.acquire() as conn:
            ended = await repository.end_stale_rounds(conn, self._settings.lease_seconds)
        if ended:
            metrics.STALE_ROUNDS.inc(ended)
            log.warning("ended %d relay round(s) held past the lease", ended)
        await self.rotate()

    async def rotate(self) -> repository.Rotation:
        """Empty drained partitions of the outbox and move its current slot on."""
        async with self._pool.acquire() as conn:
            rotation = await repository.rotate(conn, self._settings.rotate_interval_seconds)
        if rotation.rotated:
            metrics.ROTATIONS.inc()
        metrics.TRUNCATED.inc(len(rotation.truncated))
        metrics.WAITING_PARTITIONS.set(len(rotation.waiting))
        return rotation


async def _roll_back(transaction: Transaction) -> None:
    """End a round's transaction without its writes (shielded, bounded): its rows are free
    again at once. A connection that cannot answer ends the transaction by closing."""
    rolling = asyncio.ensure_future(transaction.rollback())
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(rolling), FINISH_SECONDS)
