"""Tokens of a deleted user, refused for the rest of their lifetime.

An erasure (session-svc, ``POST /internal/flairbit/user-deleted``) records a *denial*: the
time of the erasure, under a key derived from the normalised email, living as long as the
longest user token the service accepts (plus the verification leeway). A user token of that
subject issued (``iat``) at or before the erasure's second is then refused with
:class:`UserDeleted`; a token FlairBit issues later (the address registered again) is not.

The pure rule (:func:`revoked`, :func:`denial_ttl`, :func:`denial_key`) takes times as
arguments; :class:`ErasedUsers` keeps the denials in Redis. The key holds no email: a SHA-256
of it under a label of its own (so it is neither the user key of the routing keys nor found by
the erasure's sweep of the keys named by the user), and the value only the erasure's time.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from redis.asyncio import Redis

from .errors import AuthenticationFailed, RedisUnavailable
from .jwt_verify import UserIdentity
from .redis_client import faults

log = logging.getLogger(__name__)

DENIAL_PREFIX = "chat:erased:"
WARN_EVERY_SECONDS = 10.0  # while Redis is down, checks let through are logged this often
_LABEL = b"chat erased-user denial\x00"


class UserDeleted(AuthenticationFailed):
    """The token's user was deleted after the token was issued."""

    code = "USER_DELETED"
    title = "User deleted"


def denial_key(email: str, prefix: str = DENIAL_PREFIX) -> str:
    """The denial's Redis key for a normalised ``email`` (no email in it)."""
    return prefix + hashlib.sha256(_LABEL + email.encode()).hexdigest()


def revoked(issued_at: float | None, erased_at: float) -> bool:
    """Whether a token issued at ``issued_at`` (its ``iat``; None: none given) predates an
    erasure at ``erased_at`` (epoch seconds). ``iat`` has whole seconds, so a token issued in
    the erasure's own second is refused too; one without ``iat`` cannot show it is newer."""
    if issued_at is None or not math.isfinite(erased_at):
        return True
    return math.floor(issued_at) <= math.floor(erased_at)


def denial_ttl(max_token_lifetime: float, leeway: float) -> int:
    """How long a denial lives: until every token issued before the erasure has expired (its
    lifetime, and the leeway with which ``exp`` is checked), in whole seconds, at least one."""
    return max(1, math.ceil(max_token_lifetime + max(0.0, leeway)))


class ErasedUsers:
    """The denials in Redis: :meth:`record` at an erasure (the writer is given the denials'
    ``ttl_seconds``), :meth:`check` a caller."""

    def __init__(
        self, redis: Redis, ttl_seconds: int | None = None, prefix: str = DENIAL_PREFIX
    ) -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._prefix = prefix
        self._let_through = 0  # checks let through since the last warning
        self._warned_at = -math.inf

    async def record(self, email: str, at: float) -> None:
        """Deny the tokens of ``email`` issued up to ``at`` (a later erasure replaces it)."""
        if self._ttl is None:
            raise ValueError("a reader of the denials cannot record one: give ttl_seconds")
        with faults("Redis (the erasure's denial)"):
            await self._redis.set(denial_key(email, self._prefix), repr(at), ex=self._ttl)

    async def erased_at(self, email: str) -> float | None:
        """When ``email`` was last erased, if within a denial's lifetime."""
        with faults("Redis (erased users)"):
            value = await self._redis.get(denial_key(email, self._prefix))
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            log.warning("erased-user denial with an unreadable time; treated as now")
            return math.inf

    async def check(self, identity: UserIdentity, *, fail_closed: bool) -> bool:
        """Raise :class:`UserDeleted` when ``identity``'s token predates its user's erasure.
        While Redis cannot be asked: :class:`RedisUnavailable` when ``fail_closed``, else the
        caller goes on (logged). True when Redis answered, False when the token was let
        through unchecked."""
        try:
            at = await self.erased_at(identity.email)
        except RedisUnavailable:
            if fail_closed:
                raise
            self._let_through += 1
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_SECONDS:
                log.warning(
                    "erased users cannot be checked (Redis unavailable): %d let through",
                    self._let_through,
                )
                self._warned_at, self._let_through = now, 0
            return False
        if at is not None and revoked(identity.issued_at, at):
            raise UserDeleted("the account was deleted")
        return True
