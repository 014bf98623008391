"""Wiring of message-svc: ``create_app(settings)`` opens its resources in the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request

from chat_common import amqp, tracing
from chat_common.db import create_pool, ping
from chat_common.jwt_verify import verifiers
from chat_common.observability import RequestContextMiddleware
from chat_common.ratelimit import BucketPolicy
from chat_common.redis_client import redis_client
from chat_common.web import EXCEPTION_HANDLERS, ReadinessCheck, operational_routes

from .consumer import SendConsumer
from .ratelimit import MemoryLimiter, RedisLimiter, SendLimiter
from .routes import routes, state
from .service import MessageService
from .sessionwatch import SessionWatch
from .settings import Settings
from .state import AppState

SERVICE = "message-svc"


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AppState]]:
        async with contextlib.AsyncExitStack() as stack:
            http = tracing.trace_client(
                await stack.enter_async_context(httpx.AsyncClient(timeout=5.0))
            )
            pool = await create_pool(settings.database_url, max_size=settings.db_pool_max)
            stack.push_async_callback(pool.close)
            connection = await amqp.connect(settings.amqp_url)
            stack.push_async_callback(connection.close)
            async with connection.channel() as setup:
                # The exchanges the edges publish to and bind at (they may not declare them).
                await amqp.events_exchange(setup)
                await amqp.commands_exchange(setup)
            policy = BucketPolicy(settings.send_burst, settings.send_rate_per_second)
            limiter: SendLimiter
            redis = redis_client(settings.redis_url, settings.redis_timeout_seconds)
            if redis is not None:
                stack.push_async_callback(redis.aclose)
                limiter = RedisLimiter(
                    redis,
                    policy,
                    settings.duplicate_content_limit,
                    settings.duplicate_content_window_seconds,
                )
            else:
                limiter = MemoryLimiter(
                    policy,
                    settings.duplicate_content_limit,
                    settings.duplicate_content_window_seconds,
                )
            messages = MessageService(
                pool,
                limiter,
                settings.max_content_bytes,
                roster_seconds=settings.members_cache_seconds,
                max_batch=settings.send_batch_max,
                pacing=settings.pacing(),
                edit_window_seconds=settings.edit_window_seconds,
                max_encrypted_bytes=settings.encrypted_max_bytes,
            )
            stack.push_async_callback(messages.close)
            watch = SessionWatch(
                settings.database_url, messages.roster.forget, messages.roster.forget_all
            )
            watch.start()
            stack.push_async_callback(watch.stop)
            users = verifiers(settings, http).users
            if settings.consume_ws_sends:
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=settings.consumer_prefetch)
                exchange = await amqp.events_exchange(channel)
                queue = await amqp.send_queue(
                    channel, settings.send_delivery_limit, settings.send_queue
                )
                consumer = SendConsumer(
                    queue, exchange, messages, users, workers=settings.consumer_workers
                )
                await consumer.start()
                stack.push_async_callback(consumer.stop)
            yield {
                "app": AppState(
                    pool=pool,
                    amqp=connection,
                    users=users,
                    messages=messages,
                    history_default_limit=settings.history_default_limit,
                    redis=redis,
                )
            }

    def checks(request: Request) -> Sequence[ReadinessCheck]:
        app_state = state(request)

        async def broker() -> None:
            # A robust connection is not "closed" while it reconnects: ask whether it is up.
            connection = app_state.amqp
            if connection.is_closed or not connection.connected.is_set():
                raise ConnectionError("RabbitMQ is not connected")

        found: list[ReadinessCheck] = [
            ("postgres", lambda: ping(app_state.pool)),
            ("rabbitmq", broker),
        ]
        redis = app_state.redis
        if redis is not None:
            found.append(("redis", redis.ping))
        return found

    return Starlette(
        routes=[*routes(), *operational_routes(lambda request: (), dependencies=checks)],
        middleware=[*tracing.middleware(), Middleware(RequestContextMiddleware, service=SERVICE)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
