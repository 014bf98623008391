"""What the lifespan opens and every request uses."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from redis.asyncio import Redis

from chat_common.jwt_verify import UserTokenVerifier

from .service import MessageService


@dataclass(frozen=True, slots=True)
class AppState:
    pool: asyncpg.Pool
    amqp: AbstractRobustConnection
    users: UserTokenVerifier
    messages: MessageService
    history_default_limit: int
    redis: Redis | None = None  # the shared rate-limit store, when configured
