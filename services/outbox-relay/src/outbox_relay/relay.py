"""The relay loop: wake on NOTIFY (or the poll), claim, publish with confirms, mark; repeat
until the backlog is drained. Around it: the listener connection, backlog metrics, the purge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from chat_common.db import Conn

from . import repository
from .domain import CLAIMED, DEAD, Failed, OutboxRow, RetryPolicy, apply
from .publisher import BatchResult, BrokerUnavailable, Publisher
from .settings import Settings

log = logging.getLogger(__name__)

PUBLISHED = Counter("chat_outbox_published_total", "Outbox rows published and confirmed")
RETRIES = Counter("chat_outbox_retries_total", "Outbox publishes that failed and will be retried")
DEAD_ROWS = Counter("chat_outbox_dead_total", "Outbox rows that ended dead")
PENDING = Gauge("chat_outbox_pending_rows", "Unpublished outbox rows")
LAG = Gauge("chat_outbox_oldest_pending_seconds", "Age of the oldest unpublished outbox row")
LATENCY = Histogram(
    "chat_outbox_publish_latency_seconds",
    "From the row's commit to the broker's confirm",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
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
        self.listening = False

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="relay"),
            asyncio.create_task(self._listen(), name="listen"),
            asyncio.create_task(self._every(self._settings.stats_interval_seconds, self._stats)),
            asyncio.create_task(self._every(self._settings.purge_interval_seconds, self._purge)),
        ]

    async def stop(self) -> None:
        """Stop claiming; the batch in hand is finished or released; then return."""
        self._stopping.set()
        self._wake.set()
        main, *others = self._tasks
        for task in others:
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(main), self._settings.shutdown_grace_seconds)
        except TimeoutError:
            main.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                drained = await self.step()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("database unavailable (%s); retrying", exc)
                drained = True
                await self._sleep(1.0)
            except BrokerUnavailable as exc:
                log.warning("RabbitMQ unavailable (%s); rows wait", exc)
                drained = True
                await self._sleep(1.0)
            if drained:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval_seconds)

    async def step(self) -> bool:
        """One claim-publish-mark round; True when there was nothing (more) to claim."""
        token = uuid.uuid4()
        async with self._pool.acquire() as conn:
            rows = await repository.claim(
                conn, token, self._settings.batch_size, self._settings.lease_seconds
            )
        if not rows:
            return True
        try:
            result = await self._publisher.publish(rows)
        except BaseException:
            async with self._pool.acquire() as conn:
                await repository.release(conn, token, [r.id for r in rows])
            raise
        await self._settle(token, result)
        if result.broker_down:
            raise BrokerUnavailable("the connection to RabbitMQ broke during a batch")
        return len(rows) < self._settings.batch_size

    async def _settle(self, token: uuid.UUID, result: BatchResult) -> None:
        async with self._pool.acquire() as conn:
            if result.published:
                await repository.mark_published(conn, token, [r.id for r in result.published])
                PUBLISHED.inc(len(result.published))
                for row, seconds in result.confirm_seconds:
                    LATENCY.observe(row.age_seconds + seconds)
            for row, error in result.failed:
                await self._fail(conn, token, row, error)
            await repository.release(conn, token, [r.id for r in result.skipped])

    async def _fail(
        self, conn: Conn, token: uuid.UUID, row: repository.Claimed, error: str
    ) -> None:
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
        dead = after.status is DEAD
        await repository.mark_failed(
            conn,
            token,
            row.id,
            dead=dead,
            retry_count=after.retry_count,
            delay_seconds=max(0.0, after.next_retry_at - now),
            error=after.last_error or error,
        )
        if dead:
            DEAD_ROWS.inc()
            log.error(
                "outbox row %s is dead after %s attempts: %s", row.id, after.retry_count, error
            )
        else:
            RETRIES.inc()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- around the loop -----------------------------------------------------------------

    async def _listen(self) -> None:
        """Keep one connection LISTENing; NOTIFY only wakes the loop (its payload is ignored)."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                conn = await asyncpg.connect(self._settings.database_url)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("cannot LISTEN yet (%s); polling meanwhile", exc)
                await self._sleep(delay)
                delay = min(10.0, delay * 2)
                continue
            delay = 0.5
            lost = asyncio.Event()
            conn.add_termination_listener(_setter(lost))
            try:
                await conn.add_listener(repository.CHANNEL, lambda *_: self._wake.set())
                self.listening = True
                self._wake.set()  # catch up with what was committed while not listening
                while not lost.is_set() and not self._stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 5.0)
                    if not lost.is_set():
                        await conn.execute("SELECT 1")  # notices a dead socket
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2.0)

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while not self._stopping.is_set():
            try:
                await job()
            except Exception as exc:
                log.warning("%s failed: %s", getattr(job, "__name__", "job"), exc)
            await self._sleep(seconds)

    async def _stats(self) -> None:
        async with self._pool.acquire() as conn:
            count, age = await repository.backlog(conn)
        PENDING.set(count)
        LAG.set(age)

    async def _purge(self) -> None:
        async with self._pool.acquire() as conn:
            while await repository.purge(conn, self._settings.purge_after_seconds) > 0:
                pass


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    def on_termination(_connection: object) -> None:
        event.set()

    return on_termination
