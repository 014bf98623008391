"""outbox-relay settings, read once from the environment (variable = field name upper-cased)."""

from __future__ import annotations

import os
import socket
from typing import Final

import msgspec

from chat_common import settings
from chat_common.batching import PacingPolicy
from chat_common.config import BaseSettings

SHUTDOWN_MARGIN_SECONDS: Final = 2.0
"""On stop, the part of the shutdown grace kept after the round in hand: to write that round
back (or release it) and then release every row this relay still holds."""


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
    # While rows come at ROUND_BUSY_RATE per second or faster, a round starts no sooner than
    # the time ROUND_TARGET_ROWS rows take to come after the previous one, and at most
    # ROUND_INTERVAL_SECONDS after it (0: never waits), so that it gathers what was committed
    # meanwhile (fewer commits); below that rate a NOTIFY starts a round at once.
    round_interval_seconds: float = 0.005
    round_target_rows: int = 16
    round_busy_rate: float = 250.0
    # A publish round (every frame written, every confirm back) must end within this, or the
    # rows are released and the broker connection is dropped. Shorter than the lease, and
    # shorter than the shutdown grace by at least SHUTDOWN_MARGIN_SECONDS.
    publish_timeout_seconds: float = 5.0
    max_attempts: int = 10
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 60.0
    # New outbox rows go to one partition for this long, then to the next; a drained
    # partition is emptied with TRUNCATE (checked every rotate_check_seconds).
    rotate_interval_seconds: float = 5.0
    rotate_check_seconds: float = 1.0
    stats_interval_seconds: float = 5.0
    # On SIGTERM: time to finish the round in hand, write it back and release what is held.
    shutdown_grace_seconds: float = 10.0

    def __post_init__(self) -> None:
        positive = {
            "batch_size": self.batch_size,
            "lease_seconds": self.lease_seconds,
            "poll_interval_seconds": self.poll_interval_seconds,
            "publish_timeout_seconds": self.publish_timeout_seconds,
            "max_attempts": self.max_attempts,
            "rotate_interval_seconds": self.rotate_interval_seconds,
            "rotate_check_seconds": self.rotate_check_seconds,
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
        needed = self.publish_timeout_seconds + SHUTDOWN_MARGIN_SECONDS
        if self.shutdown_grace_seconds <= needed:
            raise ValueError(
                f"shutdown_grace_seconds ({self.shutdown_grace_seconds:g}) must be more than"
                f" publish_timeout_seconds ({self.publish_timeout_seconds:g}) plus"
                f" {SHUTDOWN_MARGIN_SECONDS:g} s, so that a round in hand at SIGTERM can finish"
                " and be written back; raise SHUTDOWN_GRACE_SECONDS or lower"
                " PUBLISH_TIMEOUT_SECONDS"
            )
        if not 0 <= self.retry_base_seconds <= self.retry_max_seconds:
            raise ValueError("need 0 <= retry_base_seconds <= retry_max_seconds")
        self.pacing()  # its own checks

    def pacing(self) -> PacingPolicy:
        return PacingPolicy(
            max_window=self.round_interval_seconds,
            target_batch=self.round_target_rows,
            busy_rate=self.round_busy_rate,
        )


def from_env() -> Settings:
    return settings.load(Settings)
