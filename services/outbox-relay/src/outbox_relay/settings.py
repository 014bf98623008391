"""outbox-relay settings, read once from the environment (variable = field name upper-cased)."""

from __future__ import annotations

import os
import socket

import msgspec

from chat_common import settings


def _instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8084
    log_level: str = "INFO"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/chat"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    instance_id: str = msgspec.field(default_factory=_instance)
    batch_size: int = 500
    lease_seconds: float = 30.0
    # NOTIFY wakes the relay right after a commit; this poll is only the fallback.
    poll_interval_seconds: float = 1.0
    max_attempts: int = 10
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 60.0
    purge_after_seconds: float = 3600.0
    purge_interval_seconds: float = 60.0
    stats_interval_seconds: float = 5.0
    shutdown_grace_seconds: float = 10.0


def from_env() -> Settings:
    return settings.load(Settings)
