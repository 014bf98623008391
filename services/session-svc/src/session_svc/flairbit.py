"""Profile look-ups at FlairBit: service JWT, timeouts, a cache, and a circuit breaker.

A 404 from FlairBit is an answer (the user or profile does not exist) and is cached briefly;
timeouts, refused connections and 5xx answers count against the breaker, which, once open,
fails fast with :class:`DependencyUnavailable` until its reset time has passed.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from urllib.parse import quote

import httpx
from aiocache import SimpleMemoryCache
from prometheus_client import Counter, Gauge
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from chat_common.errors import (
    DependencyTimeout,
    DependencyUnavailable,
    NotFound,
)
from chat_common.jwt_sign import ServiceTokenSigner

from .domain import Profile

log = logging.getLogger(__name__)

CACHE_RESULTS = Counter("chat_flairbit_profile_cache_total", "Profile cache look-ups", ["result"])
BREAKER_OPEN = Gauge("chat_flairbit_breaker_open", "1 while the FlairBit circuit breaker is open")
_BREAKER = "flairbit"


class ProfileDirectory:
    def __init__(
        self,
        base_url: str,
        client: httpx.AsyncClient,
        signer: ServiceTokenSigner,
        *,
        cache_ttl: int = 300,
        missing_ttl: int = 10,
        breaker_threshold: int = 5,
        breaker_reset_seconds: float = 15.0,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._client = client
        self._signer = signer
        self._cache = SimpleMemoryCache()
        self._cache_ttl = cache_ttl
        self._missing_ttl = missing_ttl
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=breaker_threshold,
            default_ttl=breaker_reset_seconds,
            exclude=[NotFound],
        )
        self._breakers.add_listener(self._on_breaker_event)

    @staticmethod
    def _on_breaker_event(name: str, event_type: str, event: object) -> None:
        if event_type == "state_changed":
            state = getattr(event, "state", "")
            BREAKER_OPEN.set(1 if state == "opened" else 0)
            log.warning("FlairBit circuit breaker is now %s", state)

    @staticmethod
    def cache_key(email: str, intent: str) -> str:
        return f"{email.strip().lower()}|{intent}"

    async def invalidate(self, email: str, intent: str | None = None) -> None:
        """Forget one cached profile, or every cached profile of ``email``."""
        if intent is not None:
            await self._cache.delete(self.cache_key(email, intent))
            return
        index = self.cache_key(email, "*")
        for cached_intent in await self._cache.get(index) or ():
            await self._cache.delete(self.cache_key(email, cached_intent))
        await self._cache.delete(index)

    async def forget_all(self) -> None:
        await self._cache.clear()

    async def _remember(self, email: str, intent: str, value: object, ttl: int) -> None:
        await self._cache.set(self.cache_key(email, intent), value, ttl=ttl)
        index = self.cache_key(email, "*")
        intents = set(await self._cache.get(index) or ()) | {intent}
        await self._cache.set(index, frozenset(intents), ttl=self._cache_ttl)

    async def profile(self, email: str, intent: str) -> Profile:
        key = self.cache_key(email, intent)
        cached = await self._cache.get(key)
        if cached is not None:
            CACHE_RESULTS.labels("hit").inc()
            if isinstance(cached, NotFound):
                raise NotFound(cached.detail, code=cached.code)
            assert isinstance(cached, Profile)
            return cached
        CACHE_RESULTS.labels("miss").inc()
        try:
            found = await self._fetch(email, intent)
        except NotFound as exc:
            await self._remember(email, intent, exc, self._missing_ttl)
            raise
        await self._remember(email, intent, found, self._cache_ttl)
        return found

    async def _fetch(self, email: str, intent: str) -> Profile:
        url = (
            f"{self._base}/internal/chat-service/users/{quote(email, safe='@')}"
            f"/profile/{quote(intent, safe='')}"
        )
        try:
            async with await self._breakers.get_breaker(_BREAKER):
                return await self._request(url, email, intent)
        except OpenedState:
            raise DependencyUnavailable(
                "FlairBit is unavailable; try again shortly", code="FLAIRBIT_UNAVAILABLE"
            ) from None

    async def _request(self, url: str, email: str, intent: str) -> Profile:
        headers = {"Authorization": f"Bearer {self._signer.token()}"}
        try:
            response = await self._client.get(url, headers=headers)
        except httpx.TimeoutException:
            raise DependencyTimeout(
                "FlairBit did not answer in time", code="FLAIRBIT_TIMEOUT"
            ) from None
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(
                f"FlairBit is unreachable: {type(exc).__name__}", code="FLAIRBIT_UNAVAILABLE"
            ) from None
        if response.status_code == 404:
            code = "PROFILE_NOT_FOUND"
            with contextlib.suppress(ValueError, AttributeError):
                code = str(response.json().get("code") or code)
            what = "user" if code == "USER_NOT_FOUND" else f"{intent} profile"
            raise NotFound(f"no {what} for {email}", code=code)
        if response.status_code != 200:
            raise DependencyUnavailable(
                f"FlairBit answered {response.status_code}", code="FLAIRBIT_UNAVAILABLE"
            )
        try:
            body = response.json()
            return Profile(
                id=uuid.UUID(str(body["id"])),
                display_name=str(body.get("displayName") or email),
                user_email=email,
                user_id=str(body.get("userId", "")),
            )
        except (ValueError, KeyError, TypeError):
            raise DependencyUnavailable(
                "FlairBit answered an unreadable profile", code="FLAIRBIT_UNAVAILABLE"
            ) from None
