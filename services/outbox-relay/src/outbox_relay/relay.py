"""The relay loop: wake on NOTIFY (or the poll), claim, publish with confirms, write back;
repeat until the backlog is drained. Around it: the LISTEN connection, backlog metrics, the
purge of old published rows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from chat_common.db import Conn

from . import batch, metrics, repository
from .domain import CLAIMED, DEAD, Failed, OutboxRow, RetryPolicy, apply
from .publisher import BrokerUnavailable, Publisher, Round
from .repository import Claimed
from .settings import Settings

log = logging.getLogger(__name__)

DATABASE_FAULTS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


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
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._next_due: float | None = None  # monotonic: when a row this relay failed is due
        self.listening = False
        self.listens = 0  # successful LISTENs so far (reconnections show up here)
        self.published = 0  # rows this relay published and marked

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not self._tasks[0].done()

    async def start(self) -> None:
        s = self._settings
        self._tasks = [
            asyncio.create_task(self._run(), name="outbox-relay"),
            asyncio.create_task(self._listen(), name="outbox-listen"),
            asyncio.create_task(self._every(s.stats_interval_seconds, self.refresh_stats)),
            asyncio.create_task(self._every(s.purge_interval_seconds, self.purge)),
        ]

    async def stop(self) -> None:
        """Stop claiming; the batch in hand is finished, or released; then return."""
        self._stopping.set()
        self._wake.set()
        if not self._tasks:
            return
        main, *others = self._tasks
        for task in others:
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(main), self._settings.shutdown_grace_seconds)
        except TimeoutError:
            log.warning("the batch in hand outlived the shutdown grace; releasing it")
            main.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        log.info("relay stopped; no batch left in hand")

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        broker_delay = 0.1
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if not self._publisher.connected:
                    await self._publisher.connect()
                drained = await self.step()
                broker_delay = 0.1
            except BrokerUnavailable as exc:
                log.warning("RabbitMQ unavailable (%s); rows wait in the outbox", exc)
                await self._sleep(broker_delay)
                broker_delay = min(2.0, broker_delay * 2)
                continue
            except DATABASE_FAULTS as exc:
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
        """One claim-publish-write round; True when the backlog looked drained."""
        token = uuid.uuid4()
        asked_at = time.monotonic()
        async with self._pool.acquire() as conn:
            rows = await repository.claim(
                conn, token, self._settings.batch_size, self._settings.lease_seconds
            )
        if not rows:
            return True
        claimed_at = time.monotonic()
        if claimed_at - asked_at > self._settings.lease_seconds / 2:
            # paused or stalled while claiming: too little of the lease is left to publish
            await self._release(token, rows)
            return False
        try:
            result = await self._publisher.publish(rows)
        except BaseException:
            await self._release(token, rows)
            raise
        await self._settle(token, rows, result, claimed_at)
        if result.broker_lost:
            raise BrokerUnavailable("the connection to RabbitMQ failed during a round")
        return len(rows) < self._settings.batch_size

    async def _release(self, token: uuid.UUID, rows: Sequence[Claimed]) -> None:
        try:
            async with asyncio.timeout(5.0), self._pool.acquire() as conn:
                await repository.release(conn, token, [r.id for r in rows])
            metrics.RELEASED.inc(len(rows))
        except Exception as exc:  # their lease runs out; another claim takes them
            log.warning("could not release %d claimed rows: %s", len(rows), exc)

    async def _settle(
        self, token: uuid.UUID, rows: Sequence[Claimed], result: Round, claimed_at: float
    ) -> None:
        """Write the round back in one short transaction, fenced by the claim token."""
        done = batch.settle(rows, result.outcomes)
        dead = 0
        async with self._pool.acquire() as conn, conn.transaction():
            marked = await repository.mark_published(conn, token, [r.id for r in done.published])
            for row, error in done.failed:
                dead += await self._fail(conn, token, row, error)
            await repository.release(conn, token, [r.id for r in done.released])
        if marked < len(done.published):
            log.warning(
                "lost the claim on %d confirmed rows (lease ran out); they will go out again",
                len(done.published) - marked,
            )
        self.published += marked
        metrics.PUBLISHED.inc(marked)
        for row in done.published:
            confirmed = result.confirmed_at.get(row.id, time.monotonic())
            metrics.LATENCY.observe(row.age_seconds + max(0.0, confirmed - claimed_at))
        metrics.RETRIES.inc(len(done.failed) - dead)
        metrics.DEAD.inc(dead)
        metrics.RELEASED.inc(len(done.released))
        if done.overtaken:
            log.info(
                "%d confirmed rows released behind a failed row of their session",
                len(done.overtaken),
            )

    async def _fail(self, conn: Conn, token: uuid.UUID, row: Claimed, error: str) -> int:
        """Count the attempt (domain rules: backoff, or dead). 1 if the row is now dead."""
        now = time.time()
        held = OutboxRow(
            id=row.id,
            session_id=row.session_id,
            status=CLAIMED,
            retry_count=row.retry_count,
            next_retry_at=now,
            claim_token=str(token),
            lease_until=now + self._settings.lease_seconds,
        )
        after = apply(held, Failed(str(token), now, error, random.random), self._policy)
        delay = max(0.0, after.next_retry_at - now)
        is_dead = after.status is DEAD
        await repository.mark_failed(
            conn,
            token,
            row.id,
            dead=is_dead,
            retry_count=after.retry_count,
            delay_seconds=delay,
            error=after.last_error or error,
        )
        if is_dead:
            log.error(
                "outbox row %s is dead after %s attempts: %s", row.id, after.retry_count, error
            )
            return 1
        log.warning("outbox row %s failed (attempt %s): %s", row.id, after.retry_count, error)
        due = time.monotonic() + delay
        self._next_due = due if self._next_due is None else min(self._next_due, due)
        return 0

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- around the loop -----------------------------------------------------------------

    async def _listen(self) -> None:
        """Keep one connection LISTENing; a NOTIFY only wakes the loop (its payload is never
        read). Notifications sent while it is down are lost, so every (re)connection wakes the
        loop once, and the poll keeps running meanwhile."""
        delay = 0.2
        while not self._stopping.is_set():
            try:
                conn = await asyncpg.connect(
                    self._settings.database_url,
                    timeout=5.0,
                    server_settings={"application_name": self._application_name("listen")},
                )
            except DATABASE_FAULTS as exc:
                log.warning("cannot LISTEN (%s); polling meanwhile", exc)
                await self._sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            delay = 0.2
            lost = asyncio.Event()
            conn.add_termination_listener(_setter(lost))
            try:
                await conn.add_listener(repository.CHANNEL, lambda *_: self._wake.set())
                self.listening = True
                self.listens += 1
                self._wake.set()  # catch up with what was committed while not listening
                while not lost.is_set() and not self._stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 5.0)
                    if not lost.is_set():
                        await conn.execute("SELECT 1", timeout=5.0)  # notices a dead socket
            except DATABASE_FAULTS as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2.0)

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

    async def purge(self) -> int:
        """Delete published rows past retention, in bounded batches (one transaction each)."""
        total = 0
        limit = self._settings.purge_batch_size
        while not self._stopping.is_set():
            async with self._pool.acquire() as conn:
                deleted = await repository.purge(conn, self._settings.purge_after_seconds, limit)
            total += deleted
            if deleted < limit:
                break
        if total:
            log.info("purged %d published outbox rows", total)
        return total


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    def on_termination(_connection: object) -> None:
        event.set()

    return on_termination
