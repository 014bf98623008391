"""Wiring of outbox-relay: the relay runs in the lifespan of a small app that serves
``/healthz``, ``/readyz`` (PostgreSQL, RabbitMQ, the relay loop) and ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request

from chat_common import db
from chat_common.db import ping
from chat_common.errors import BrokerUnavailable
from chat_common.web import EXCEPTION_HANDLERS, ReadinessCheck, operational_routes

from .publisher import RabbitPublisher
from .relay import Relay
from .settings import Settings

SERVICE = "outbox-relay"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AppState:
    pool: asyncpg.Pool
    publisher: RabbitPublisher
    relay: Relay


async def open_pool(settings: Settings) -> asyncpg.Pool:
    pool = await db.create_pool(
        settings.database_url,
        min_size=1,
        max_size=4,
        server_settings={
            # The relay's statements read a few rows by index at any table size: the
            # server's default plan caching is fine for them.
            "plan_cache_mode": "auto",
            "application_name": f"outbox-relay {settings.instance_id}"[:63],
            # The claim is a short statement; compiling it would cost more than running it.
            "jit": "off",
            # A relay paused or cut off inside its write-back transaction would keep its row
            # locks, and SKIP LOCKED would hold its sessions back from every other relay for as
            # long as it stays paused. The server ends such a transaction once the lease is up.
            "idle_in_transaction_session_timeout": str(math.ceil(settings.lease_seconds * 1000)),
        },
    )
    return pool


async def close_pool(pool: asyncpg.Pool, within: float = 5.0) -> None:
    """Close gracefully; past ``within`` (a statement stuck on an unresponsive server) the
    remaining connections are cut (asyncpg terminates the pool when its close is cancelled)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pool.close(), within)


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AppState]]:
        async with contextlib.AsyncExitStack() as stack:
            pool = await open_pool(settings)
            stack.push_async_callback(close_pool, pool)
            publisher = RabbitPublisher(
                settings.amqp_url,
                timeout=settings.publish_timeout_seconds,
                name=f"outbox-relay {settings.instance_id}",
            )
            stack.push_async_callback(publisher.close)
            try:
                await publisher.connect()
            except BrokerUnavailable as exc:  # the relay keeps trying; rows wait meanwhile
                log.warning("RabbitMQ not reachable at start: %s", exc)
            relay = Relay(settings, pool, publisher)
            await relay.start()
            stack.push_async_callback(relay.stop)  # runs first: before the publisher closes
            yield {"app": AppState(pool=pool, publisher=publisher, relay=relay)}

    def checks(request: Request) -> Sequence[ReadinessCheck]:
        state = cast(AppState, request.state.app)

        async def broker() -> None:
            if not state.publisher.connected:
                raise ConnectionError("no connection to RabbitMQ")

        async def loop() -> None:
            if not state.relay.running:
                raise RuntimeError("the relay loop is not running")

        return [("postgres", lambda: ping(state.pool)), ("rabbitmq", broker), ("relay", loop)]

    return Starlette(
        routes=operational_routes(checks),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
