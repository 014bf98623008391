"""Wiring of session-svc: ``create_app(settings)`` opens its resources in the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import httpx
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request

from chat_common import tracing
from chat_common.db import create_pool, ping
from chat_common.erased import ErasedUsers, denial_ttl
from chat_common.jwt_sign import ServiceTokenSigner, load_private_key
from chat_common.jwt_verify import verifiers
from chat_common.observability import RequestContextMiddleware
from chat_common.presence_store import RedisPresence
from chat_common.ratelimit import (
    BucketPolicy,
    Buckets,
    FallbackBuckets,
    MemoryBuckets,
    RedisBuckets,
)
from chat_common.redis_client import redis_client
from chat_common.web import EXCEPTION_HANDLERS, ReadinessCheck, operational_routes

from .blocks import BlockService
from .erasure import ErasureService
from .flairbit import ProfileDirectory
from .invalidation import Invalidations
from .keyring import KeyService
from .presence import PresenceService
from .routes import routes, state
from .service import SessionService
from .settings import Settings
from .state import AppState

SERVICE = "session-svc"


def key_change_buckets(settings: Settings, redis: Redis | None) -> Buckets:
    """The users' key-change buckets: shared through Redis when configured, this instance's
    own while Redis cannot be asked (degraded, never unmetered)."""
    policy = BucketPolicy(settings.key_change_burst, settings.key_change_rate_per_second)
    if redis is None:
        return MemoryBuckets(policy)
    shared = RedisBuckets(redis, policy, prefix="chat:session-svc:key-changes:")
    return FallbackBuckets(shared, MemoryBuckets(policy), lambda: None)


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AppState]]:
        timeout = httpx.Timeout(settings.flairbit_timeout_seconds, connect=1.0)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
            tracing.trace_client(http)
            pool = await create_pool(settings.database_url, max_size=settings.db_pool_max)
            redis = redis_client(settings.redis_url, settings.redis_timeout_seconds)
            try:
                tokens = verifiers(
                    settings,
                    http,
                    flairbit_issuer=settings.flairbit_service_issuer,
                    flairbit_audience=settings.flairbit_service_audience,
                )
                signer = ServiceTokenSigner(
                    load_private_key(settings.service_private_key_file),
                    issuer=settings.service_jwt_issuer,
                    audience=settings.service_jwt_audience,
                    ttl_seconds=settings.service_jwt_ttl_seconds,
                )
                profiles = ProfileDirectory(
                    settings.flairbit_url,
                    http,
                    signer,
                    cache_ttl=settings.profile_cache_ttl_seconds,
                    breaker_threshold=settings.breaker_threshold,
                    breaker_reset_seconds=settings.breaker_reset_seconds,
                )
                invalidations = Invalidations(profiles, redis)
                invalidations.start()
                presence_store = (
                    None
                    if redis is None
                    else RedisPresence(  # no lease of its own: reads, and peers after blocks
                        redis, 0.0, 0.0, prefix=settings.presence_key_prefix
                    )
                )
                erased = (
                    None
                    if redis is None
                    else ErasedUsers(
                        redis,
                        denial_ttl(
                            settings.user_token_max_lifetime_seconds, settings.jwt_leeway_seconds
                        ),
                    )
                )
                try:
                    yield {
                        "app": AppState(
                            pool=pool,
                            http=http,
                            users=tokens.users,
                            flairbit_tokens=tokens.flairbit,
                            profiles=profiles,
                            sessions=SessionService(pool, profiles),
                            invalidations=invalidations,
                            presence=PresenceService(pool, presence_store),
                            keys=KeyService(
                                pool,
                                key_change_buckets(settings, redis),
                                max_keys=settings.max_keys_per_user,
                                revoked_kept=settings.revoked_keys_kept,
                            ),
                            blocks=BlockService(pool, presence_store),
                            erasure=ErasureService(
                                pool, invalidations, redis, settings.presence_key_prefix, erased
                            ),
                            erased=erased,
                        )
                    }
                finally:
                    await invalidations.stop()
            finally:
                await pool.close()
                if redis is not None:
                    await redis.aclose()

    def checks(request: Request) -> Sequence[ReadinessCheck]:
        pool = state(request).pool
        return [("postgres", lambda: ping(pool))]

    return Starlette(
        routes=[*routes(), *operational_routes(lambda request: (), dependencies=checks)],
        middleware=[*tracing.middleware(), Middleware(RequestContextMiddleware, service=SERVICE)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
