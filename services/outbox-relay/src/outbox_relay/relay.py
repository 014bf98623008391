"""The relay loop: wake on NOTIFY (or the poll), claim, publish with confirms, write back;
repeat until the backlog is drained. Around it: the LISTEN connection, backlog metrics, the
purge of old published rows.

Stopping (:meth:`Relay.stop`) ends with no row left claimed by this relay, as long as
PostgreSQL answers: the round in hand finishes (a publish round is bounded by
``publish_timeout_seconds``), or, past the grace, is cut short and released; a write-back
under way is never cut short, only bounded; and last, every row still claimed under one of this
relay's claim tokens is released (a claim whose answer was lost, a write-back that failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import asyncpg

from chat_common.db import Conn

from . import batch, metrics, repository
from .domain import CLAIMED, DEAD, Failed, OutboxRow, RetryPolicy, RowState, apply
from .publisher import BrokerUnavailable, Publisher, Round
from .repository import Claimed
from .settings import SHUTDOWN_MARGIN_SECONDS, Settings

log = logging.getLogger(__name__)

# Once the shutdown grace runs out, half of SHUTDOWN_MARGIN_SECONDS is left to a write-back
# under way (or the release of a round cut short), the other half to releasing what is held.
FINISH_SECONDS: Final = SHUTDOWN_MARGIN_SECONDS / 2
RELEASE_SECONDS: Final = 5.0  # giving a batch back, outside a shutdown

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
        # Claim tokens whose rows may still be claimed (monotonic time of the claim): a token
        # leaves once its round is written back or released.
        self._held: dict[uuid.UUID, float] = {}
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
        """Stop claiming; let the round in hand finish, or cut it short and release it; then
        release every row still claimed by this relay. Within ``shutdown_grace_seconds``."""
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
            main.cancel()  # a write-back under way is shielded: it gets FINISH_SECONDS
            await asyncio.wait({main}, timeout=FINISH_SECONDS + 0.1)
        if not main.done():
            log.warning("the relay loop did not end in time; releasing its rows anyway")
        await self._release_held(max(FINISH_SECONDS, deadline - loop.time()))
        await asyncio.wait(self._tasks, timeout=max(0.1, deadline - loop.time()))
        for task in self._tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: the loops log their own faults
        if self._held:
            log.warning(
                "relay stopped; rows of %d claims stay claimed until their lease runs out",
                len(self._held),
            )
        else:
            log.info("relay stopped; no row left claimed")

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        broker_delay = 0.1
        while not self._stopping.is_set():
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
        if self._stopping.is_set():
            return True
        if self._held:  # a round that ended in a database fault: give its rows back first
            await self._release_held(RELEASE_SECONDS)
        token = uuid.uuid4()
        asked_at = time.monotonic()
        self._hold(token, asked_at)  # before the claim: its answer may never arrive
        async with self._pool.acquire() as conn:
            rows = await repository.claim(
                conn, token, self._settings.batch_size, self._settings.lease_seconds
            )
        if not rows:
            del self._held[token]
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
        await self._write_back(token, rows, result, claimed_at)
        if result.broker_lost:
            raise BrokerUnavailable("the connection to RabbitMQ failed during a round")
        return len(rows) < self._settings.batch_size

    def _hold(self, token: uuid.UUID, now: float) -> None:
        # A token whose lease ran out long ago holds nothing any more (another claim may have
        # taken its rows); forgetting it keeps the set small through a long database outage.
        expired = now - 2 * self._settings.lease_seconds
        for old in [t for t, at in self._held.items() if at < expired]:
            del self._held[old]
        self._held[token] = now

    async def _release(self, token: uuid.UUID, rows: Sequence[Claimed]) -> None:
        within = FINISH_SECONDS if self._stopping.is_set() else RELEASE_SECONDS
        try:
            async with asyncio.timeout(within), self._pool.acquire() as conn:
                await repository.release(conn, token, [r.id for r in rows])
        except Exception as exc:  # released on stop, or another claim takes them after the lease
            log.warning("could not release %d claimed rows: %s", len(rows), exc)
            return
        self._held.pop(token, None)
        metrics.RELEASED.inc(len(rows))

    async def _release_held(self, within: float) -> None:
        """Release every row still claimed under one of this relay's tokens (fenced)."""
        if not self._held:
            return
        tokens = list(self._held)
        try:
            async with asyncio.timeout(within), self._pool.acquire() as conn:
                released = await repository.release_claims(conn, tokens)
        except Exception as exc:
            log.warning("could not release the rows this relay holds: %s", exc)
            return
        for token in tokens:
            self._held.pop(token, None)
        metrics.RELEASED.inc(released)
        if released:
            log.info("released %d rows still claimed by this relay", released)

    async def _write_back(
        self, token: uuid.UUID, rows: Sequence[Claimed], result: Round, claimed_at: float
    ) -> None:
        """:meth:`_settle`, shielded: a stop past the grace does not cut a write-back short (its
        transaction would roll back and leave the rows claimed); it gets FINISH_SECONDS more,
        after which it is abandoned and :meth:`stop` releases what it still holds."""
        writing = asyncio.ensure_future(self._settle(token, rows, result, claimed_at))
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
        self, token: uuid.UUID, rows: Sequence[Claimed], result: Round, claimed_at: float
    ) -> None:
        """Write the round back in one short transaction, fenced by the claim token."""
        done = batch.settle(rows, result.outcomes)
        written: list[RowState] = []
        async with self._pool.acquire() as conn, conn.transaction():
            marked = await repository.mark_published(conn, token, [r.id for r in done.published])
            for row, error in done.failed:
                state = await self._fail(conn, token, row, error)
                if state is not None:
                    written.append(state)
            await repository.release(conn, token, [r.id for r in done.released])
        self._held.pop(token, None)  # every row of the claim is written back, or not ours
        dead = written.count(DEAD)
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
        metrics.RETRIES.inc(len(written) - dead)
        metrics.DEAD.inc(dead)
        if len(written) < len(done.failed):
            log.warning(
                "lost the claim on %d failed rows (lease ran out); their attempt is not counted",
                len(done.failed) - len(written),
            )
        metrics.RELEASED.inc(len(done.released))
        if done.overtaken:
            log.info(
                "%d confirmed rows released behind a failed row of their session",
                len(done.overtaken),
            )

    async def _fail(
        self, conn: Conn, token: uuid.UUID, row: Claimed, error: str
    ) -> RowState | None:
        """Count the attempt (domain rules: backoff, or dead). The state written (pending or
        dead), or None when the fence refused the write (the claim was lost)."""
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
        written = await repository.mark_failed(
            conn,
            token,
            row.id,
            dead=is_dead,
            retry_count=after.retry_count,
            delay_seconds=delay,
            error=after.last_error or error,
        )
        if not written:
            return None
        if is_dead:
            log.error(
                "outbox row %s is dead after %s attempts: %s", row.id, after.retry_count, error
            )
            return DEAD
        log.warning("outbox row %s failed (attempt %s): %s", row.id, after.retry_count, error)
        due = time.monotonic() + delay
        self._next_due = due if self._next_due is None else min(self._next_due, due)
        return after.status

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
