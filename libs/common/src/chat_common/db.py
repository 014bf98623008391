"""PostgreSQL helpers (asyncpg): the database adapter.

asyncpg's faults that mean "PostgreSQL cannot do it now" (:data:`FAULTS`: refused, reset or
timed-out sockets, a server shutting down or starting, out of connections, a statement
cancelled, a transaction rolled back by a deadlock or a serialization failure) become
:class:`~chat_common.errors.DatabaseUnavailable` here, once: in every ``async with
pool.acquire()`` block and pool query of a :func:`create_pool` pool, and in :func:`faults` for a
connection of one's own. Constraint violations and other SQL errors are left as they are: they
are the caller's to handle (or a bug).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Generator
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

from .errors import DatabaseUnavailable

log = logging.getLogger(__name__)

FAULTS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, and the connection lost
    asyncpg.InterfaceError,  # the connection or pool closed under the operation
    asyncpg.OperatorInterventionError,  # shutting down, starting up, statement cancelled
    asyncpg.InsufficientResourcesError,  # too many connections, disk or memory full
    asyncpg.TransactionRollbackError,  # deadlock, serialization failure: try again
)


def unavailable(exc: BaseException) -> DatabaseUnavailable:
    # The class name only: a driver's message may carry the server's address.
    return DatabaseUnavailable(f"the database did not answer ({type(exc).__name__}); try again")


@contextlib.contextmanager
def faults() -> Generator[None]:
    """Report asyncpg's faults raised inside as :class:`DatabaseUnavailable`."""
    try:
        yield
    except FAULTS as exc:
        raise unavailable(exc) from exc


class _Acquire(PoolAcquireContext):
    """``pool.acquire()`` that translates what fails in acquiring and in the block."""

    __slots__ = ()

    async def __aenter__(self) -> Any:
        with faults():
            return await super().__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        with faults():
            await super().__aexit__(*exc)
        raised = exc[1] if len(exc) > 1 else None
        if isinstance(raised, FAULTS):
            raise unavailable(raised) from raised

    def __await__(self) -> Generator[Any, None, Any]:
        try:
            return (yield from super().__await__())
        except FAULTS as exc:
            raise unavailable(exc) from exc


class Pool(asyncpg.Pool):
    """asyncpg's pool with :class:`_Acquire`: the pool's own query methods acquire through
    it, so they translate too."""

    def acquire(self, *, timeout: float | None = None) -> Any:
        return _Acquire(self, timeout)


async def hold_listening(
    conn: asyncpg.Connection[asyncpg.Record],
    stop: asyncio.Event | None = None,
    *,
    check_seconds: float = 5.0,
) -> None:
    """Hold a connection of one's own (a LISTEN's) until it is lost or ``stop`` is set. Its
    termination and ``stop`` end the wait at once; a socket that died without a word is
    noticed by a ``SELECT 1`` every ``check_seconds``, raised as :class:`DatabaseUnavailable`."""
    lost = asyncio.Event()
    conn.add_termination_listener(lambda _conn: lost.set())
    if conn.is_closed():  # lost before the listener was added
        lost.set()
    ends = [lost] if stop is None else [lost, stop]
    while not any(end.is_set() for end in ends):
        waits = [asyncio.ensure_future(end.wait()) for end in ends]
        try:
            await asyncio.wait(waits, timeout=check_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if not any(end.is_set() for end in ends):
            with faults():
                await conn.execute("SELECT 1", timeout=check_seconds)


Notified = Callable[[Any, int, str, Any], None]  # asyncpg's listener: conn, pid, channel, payload


async def keep_listening(
    dsn: str,
    channel: str,
    notified: Notified,
    listening: Callable[[bool], None],
    *,
    application_name: str,
    meanwhile: str,
    stop: asyncio.Event | None = None,
) -> None:
    """Keep one connection of one's own LISTENing on ``channel`` until ``stop`` is set (or
    the task is cancelled): reconnect after a loss, backing off from 0.2 s to 5 s while
    PostgreSQL cannot be reached. Notifications sent while no connection listens are lost,
    so ``listening(True)`` is called once each (re)connection listens (the place to catch up
    with what may have been missed), and ``listening(False)`` each time a connection goes.
    ``meanwhile`` names, in the logs, what stands in for the notifications while none come."""
    delay = 0.2
    while stop is None or not stop.is_set():
        try:
            with faults():
                conn = await asyncpg.connect(
                    dsn, timeout=5.0, server_settings={"application_name": application_name}
                )
        except DatabaseUnavailable as exc:
            log.warning("cannot LISTEN on %s (%s); %s meanwhile", channel, exc, meanwhile)
            await _pause(delay, stop)
            delay = min(5.0, delay * 2)
            continue
        delay = 0.2
        try:
            with faults():
                await conn.add_listener(channel, notified)
            listening(True)
            await hold_listening(conn, stop)
        except DatabaseUnavailable as exc:
            log.warning("LISTEN connection on %s lost (%s); reconnecting", channel, exc)
        finally:
            listening(False)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Nothing to undo: the services set no session state (no SET, LISTEN or advisory locks on
    pooled connections). asyncpg still rolls back a transaction left open before calling this,
    so only its default reset query (one more round trip per borrow) is skipped."""


# Every statement is planned for its own parameters (a custom plan), never with a cached
# generic plan. asyncpg prepares each statement once per connection, and PostgreSQL switches a
# prepared statement to a generic plan after five executions if it looks no dearer; that plan
# is kept until the statistics change. A generic plan made while a table was nearly empty
# (a fresh database, or one where nothing runs ANALYZE: autovacuum off) scans the whole table
# and stays in use as the table grows: measured, a send batch that read chat_messages by its
# client-id index at 33 buffers went to a full scan of it, 5x the database's CPU per message
# after 200,000 messages (docs/benchmarks.md). Planning each execution costs a fraction of a
# millisecond per statement; a full scan of a large table costs much more.
_SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    server_settings: dict[str, str] | None = None,
) -> asyncpg.Pool:
    """A :class:`Pool` (asyncpg's own defaults otherwise, as ``asyncpg.create_pool`` sets
    them); ``server_settings`` add to the services' common ones."""
    with faults():
        pool = await Pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            max_queries=50_000,
            max_inactive_connection_lifetime=300.0,
            loop=None,
            connection_class=asyncpg.Connection,
            record_class=asyncpg.Record,
            command_timeout=10,
            reset=keep_session,
            server_settings={**_SERVER_SETTINGS, **(server_settings or {})},
        )
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")


# A connection as repositories take it: a plain connection or one borrowed from a pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
