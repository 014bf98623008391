"""Wiring of outbox-relay: the relay runs in the lifespan of a small app that serves
``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from starlette.applications import Starlette
from starlette.requests import Request

from chat_common import amqp
from chat_common.db import create_pool, ping
from chat_common.web import EXCEPTION_HANDLERS, ReadinessCheck, operational_routes

from .publisher import Publisher
from .relay import Relay
from .settings import Settings

SERVICE = "outbox-relay"


@dataclass(frozen=True, slots=True)
class AppState:
    pool: asyncpg.Pool
    amqp: AbstractRobustConnection
    relay: Relay


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AppState]]:
        async with contextlib.AsyncExitStack() as stack:
            pool = await create_pool(settings.database_url, max_size=4)
            stack.push_async_callback(pool.close)
            connection = await amqp.connect(settings.amqp_url)
            stack.push_async_callback(connection.close)
            setup = await connection.channel()
            await amqp.events_exchange(setup)  # the exchange the rows name by default
            await setup.close()

            async def channel() -> AbstractChannel:
                return await connection.channel(publisher_confirms=True)

            relay = Relay(settings, pool, Publisher(channel))
            await relay.start()
            stack.push_async_callback(relay.stop)
            yield {"app": AppState(pool=pool, amqp=connection, relay=relay)}

    def checks(request: Request) -> Sequence[ReadinessCheck]:
        state = cast(AppState, request.state.app)

        async def broker() -> None:
            if state.amqp.is_closed:
                raise ConnectionError("RabbitMQ connection is closed")

        return [("postgres", lambda: ping(state.pool)), ("rabbitmq", broker)]

    return Starlette(
        routes=operational_routes(checks),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
