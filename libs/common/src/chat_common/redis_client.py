"""The one way services open Redis: fail fast when it is down."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def redis_client(url: str | None, timeout: float) -> Redis | None:
    """A client for ``url`` (None when no Redis is configured): connect and command timeouts of
    ``timeout`` seconds and one immediate retry (a pooled connection Redis dropped is reopened
    once), so an outage is noticed at once and each caller decides its degraded mode."""
    if not url:
        return None
    return Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1)
    )
