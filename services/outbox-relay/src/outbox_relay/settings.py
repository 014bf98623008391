"""outbox-relay settings, read once from the environment (variable = field name upper-cased)."""

from __future__ import annotations

import os
import socket

import msgspec

from chat_common import settings
from chat_common.config import BaseSettings


def _instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings, kw_only=True, frozen=True):
    port: int = 8084  # /healthz, /readyz, /metrics
    database_url: str = "postgresql://postgres@127.0.0.1:5432/chat"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Names this process in pg_stat_activity (application_name) and in RabbitMQ's connection list.
    instance_id: str = msgspec.field(default_factory=_instance)
    batch_size: int = 500
    lease_seconds: float = 30.0
    # NOTIFY wakes the relay right after a commit; this poll is only the fallback.
    poll_interval_seconds: float = 1.0
    # A publish round (every frame written, every confirm back) must end within this, or the
    # rows are released and the broker connection is dropped. Shorter than the lease.
    publish_timeout_seconds: float = 10.0
    max_attempts: int = 10
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 60.0
    purge_after_seconds: float = 3600.0
    purge_interval_seconds: float = 60.0
    purge_batch_size: int = 5000
    stats_interval_seconds: float = 5.0
    shutdown_grace_seconds: float = 10.0

    def __post_init__(self) -> None:
        positive = {
            "batch_size": self.batch_size,
            "lease_seconds": self.lease_seconds,
            "poll_interval_seconds": self.poll_interval_seconds,
            "publish_timeout_seconds": self.publish_timeout_seconds,
            "max_attempts": self.max_attempts,
            "purge_interval_seconds": self.purge_interval_seconds,
            "purge_batch_size": self.purge_batch_size,
            "stats_interval_seconds": self.stats_interval_seconds,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if self.publish_timeout_seconds >= self.lease_seconds:
            raise ValueError(
                "publish_timeout_seconds must be shorter than lease_seconds, or a slow round"
                " could outlive its lease and be published twice"
            )
        if not 0 <= self.retry_base_seconds <= self.retry_max_seconds:
            raise ValueError("need 0 <= retry_base_seconds <= retry_max_seconds")
        if self.purge_after_seconds < 0:
            raise ValueError("purge_after_seconds must be >= 0")


def from_env() -> Settings:
    return settings.load(Settings)
