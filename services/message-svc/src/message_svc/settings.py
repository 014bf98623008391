"""message-svc settings, read once from the environment (variable = field name upper-cased)."""

from __future__ import annotations

from chat_common import settings
from chat_common.batching import PacingPolicy
from chat_common.config import BaseSettings


class Settings(BaseSettings, kw_only=True, frozen=True):
    port: int = 8082
    database_url: str = "postgresql://postgres@127.0.0.1:5432/chat"
    db_pool_max: int = 20
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # When set, rate limits are shared by every instance through Redis.
    redis_url: str | None = None
    # Each Redis connect and command gives up after this long (the send then answers 503).
    redis_timeout_seconds: float = 0.5
    max_content_bytes: int = 4096
    # An encrypted message's envelope (its JSON as stored) at most this many bytes: a text at
    # the content limit, encrypted for every device of both users (20), takes about 10 KB; a
    # SEND carrying the largest envelope still fits in ws-edge's MAX_BODY_BYTES (16 KiB).
    encrypted_max_bytes: int = 12288
    send_burst: int = 20
    send_rate_per_second: float = 10.0
    # The same content from the same sender at most this many times per window.
    duplicate_content_limit: int = 3
    duplicate_content_window_seconds: float = 30.0
    history_default_limit: int = 50
    # A sender may edit a message for this long after it was sent (0: edits are refused);
    # deleting has no time limit.
    edit_window_seconds: float = 900.0
    # Concurrent sends are stored together, at most this many per statement (group commit).
    send_batch_max: int = 256
    # While sends arrive at SEND_BATCH_BUSY_RATE per second or faster, a batch gathers for the
    # time SEND_BATCH_TARGET sends take to arrive, at most SEND_BATCH_WINDOW_SECONDS after the
    # previous batch started (0: never gathers); below that rate a send goes at once.
    send_batch_window_seconds: float = 0.020
    send_batch_target: int = 16
    send_batch_busy_rate: float = 250.0
    # A session's participants are read once and kept this long by the send path: the most a
    # change to a session (a block, a closed session) can take to reach sends.
    members_cache_seconds: float = 10.0
    # chat.send consumer
    consume_ws_sends: bool = True
    send_queue: str = "chat.send"
    # One user's sends go to one worker, in order; each worker waits for its send's commit
    # (a batching window under load), so the workers bound the queue's rate: 8 carried ~280
    # msg/s here, 64 carried 500 with p99 81 ms (docs/benchmarks.md).
    consumer_prefetch: int = 256
    consumer_workers: int = 64
    send_delivery_limit: int = 20

    def __post_init__(self) -> None:
        self.pacing()  # its own checks
        if self.edit_window_seconds < 0:
            raise ValueError("EDIT_WINDOW_SECONDS must not be negative")
        if self.encrypted_max_bytes < 256:
            raise ValueError("ENCRYPTED_MAX_BYTES must be at least 256")

    def pacing(self) -> PacingPolicy:
        return PacingPolicy(
            max_window=self.send_batch_window_seconds,
            target_batch=self.send_batch_target,
            busy_rate=self.send_batch_busy_rate,
        )


def from_env() -> Settings:
    return settings.load(Settings)
