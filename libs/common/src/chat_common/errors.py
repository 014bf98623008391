"""Domain errors shared by every chat service.

The tree (no HTTP status here: the web layer maps classes to statuses)::

    ChatError
    ├── InvalidInput            a request body, query or frame that breaks the contract
    │   └── ContentTooLarge     a message body over the configured size
    ├── AuthenticationFailed    missing, malformed, expired or untrusted token
    ├── Forbidden               authenticated, but not allowed (not a participant)
    ├── NotFound                unknown session, user or profile
    ├── Conflict                a request that contradicts stored state
    ├── RateLimited             too many requests; carries ``retry_after`` seconds
    └── DependencyError         something we rely on failed
        ├── DependencyUnavailable   down, refusing, or its circuit breaker is open
        │   ├── DatabaseUnavailable     PostgreSQL (translated by ``chat_common.db``)
        │   ├── BrokerUnavailable       RabbitMQ (translated by ``chat_common.amqp``)
        │   └── RedisUnavailable        Redis (translated by ``chat_common.redis_client``)
        └── DependencyTimeout       too slow to answer

Drivers' exceptions (asyncpg's, aio-pika's, redis-py's, sockets') are translated into this tree
once, where the driver is called (each adapter lists its driver's faults in one place); code
above the adapters catches only these classes, never a driver's or ``OSError``.
"""

from __future__ import annotations


class ChatError(Exception):
    """Base of every error a chat service reports to its caller."""

    code: str = "CHAT_ERROR"
    title: str = "Chat error"

    def __init__(self, detail: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.field = field


class InvalidInput(ChatError):
    code = "INVALID_INPUT"
    title = "Invalid input"


class ContentTooLarge(InvalidInput):
    code = "CONTENT_TOO_LARGE"
    title = "Content too large"


class AuthenticationFailed(ChatError):
    code = "UNAUTHENTICATED"
    title = "Authentication failed"


class Forbidden(ChatError):
    code = "FORBIDDEN"
    title = "Forbidden"


class NotFound(ChatError):
    code = "NOT_FOUND"
    title = "Not found"


class Conflict(ChatError):
    code = "CONFLICT"
    title = "Conflict"


class RateLimited(ChatError):
    code = "RATE_LIMITED"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class DependencyError(ChatError):
    code = "DEPENDENCY_FAILED"
    title = "Dependency failed"


class DependencyUnavailable(DependencyError):
    code = "DEPENDENCY_UNAVAILABLE"
    title = "Service unavailable"


class DependencyTimeout(DependencyError):
    code = "DEPENDENCY_TIMEOUT"
    title = "Dependency timed out"


class DatabaseUnavailable(DependencyUnavailable):
    code = "DEPENDENCY_UNAVAILABLE"
    title = "Service unavailable"


class BrokerUnavailable(DependencyUnavailable):
    code = "DEPENDENCY_UNAVAILABLE"
    title = "Service unavailable"


class RedisUnavailable(DependencyUnavailable):
    code = "DEPENDENCY_UNAVAILABLE"
    title = "Service unavailable"
