"""The one way services open Redis: fail fast when it is down; and the Redis adapter's faults:
:data:`FAULTS` (the client's errors, refused, reset, its timeouts, a server loading or
read-only, an error answer; and the socket's), reported by :func:`faults` as
:class:`~chat_common.errors.RedisUnavailable`."""

from __future__ import annotations

import contextlib
from collections.abc import Generator

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from .errors import RedisUnavailable

FAULTS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


@contextlib.contextmanager
def faults(what: str = "Redis") -> Generator[None]:
    """Report redis-py's faults raised inside as :class:`RedisUnavailable` (the detail names
    the error class only: Redis's messages may carry its address)."""
    try:
        yield
    except FAULTS as exc:
        raise RedisUnavailable(f"{what} is unavailable: {type(exc).__name__}") from exc


def redis_client(url: str | None, timeout: float) -> Redis | None:
    """A client for ``url`` (None when no Redis is configured): connect and command timeouts of
    ``timeout`` seconds and one immediate retry (a pooled connection Redis dropped is reopened
    once), so an outage is noticed at once and each caller decides its degraded mode."""
    if not url:
        return None
    return Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1)
    )
