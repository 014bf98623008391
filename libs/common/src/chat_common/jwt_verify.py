"""Verification of user JWTs issued by FlairBit (and of FlairBit's service JWTs).

RS256 only: the algorithm list is fixed here and never read from the token. ``exp`` and ``sub``
are required; ``iss``, ``aud`` and ``nbf`` are checked when configured or present. Keys come from
a PEM file or from a JWKS document (selected by ``kid``).

A JWKS key set is replaced whole on each load, and loaded again once it is older than its max
age (``Cache-Control: max-age`` when the document gives one, clamped to ``refresh_interval``
.. ``max_age_cap``; ``max_age`` otherwise), so a key FlairBit withdrew is refused within that
time; an unknown ``kid`` loads it early, at most once per ``refresh_interval``. A failed load
backs off (``retry_base`` doubling to ``retry_max``): meanwhile nobody fetches, and tokens are
checked against the last key set loaded (none loaded yet: 503). Verified tokens are
remembered until the key set changes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .config import BaseSettings
from .errors import AuthenticationFailed, DependencyUnavailable, InvalidInput
from .identity import normalise_email
from .token_cache import VerifiedTokens

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256",)
MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    expires_at: float
    issuer: str | None
    raw: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class UserIdentity:
    email: str
    expires_at: float
    issued_at: float | None = None  # the token's ``iat``, when it has one


class UnknownKey(AuthenticationFailed):
    code = "UNKNOWN_KEY"


class KeySource(Protocol):
    def key_for(self, kid: str | None) -> RSAPublicKey:
        """The key for ``kid``; raise :class:`UnknownKey` when there is none."""
        ...


def _as_rsa(key: object) -> RSAPublicKey:
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the verification key is not an RSA public key")
    return key


class StaticKey:
    """One PEM public key; any ``kid`` (or none) selects it."""

    def __init__(self, key: RSAPublicKey) -> None:
        self._key = key

    @classmethod
    def from_pem(cls, pem: bytes) -> StaticKey:
        return cls(_as_rsa(load_pem_public_key(pem)))

    @classmethod
    def from_file(cls, path: str | Path) -> StaticKey:
        return cls.from_pem(Path(path).read_bytes())

    def key_for(self, kid: str | None) -> RSAPublicKey:
        return self._key


class JwksKeys:
    """Keys of a JWKS document, by ``kid``; call :meth:`refresh` to (re)load them."""

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        *,
        refresh_interval: float = 30.0,
        max_age: float = 300.0,
        max_age_cap: float = 3600.0,
        retry_base: float = 1.0,
        retry_max: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._client = client
        self._refresh_interval = refresh_interval
        self._max_age = max_age
        self._max_age_cap = max(max_age_cap, refresh_interval)
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._clock = clock
        self._keys: dict[str, RSAPublicKey] = {}
        self._loaded_at: float | None = None
        self._expires_at = -math.inf
        self._failures = 0
        self._retry_at = -math.inf
        self._loading = asyncio.Lock()
        self.generation = 0  # one more on each load: verified tokens are forgotten

    @property
    def loaded(self) -> bool:
        return self._loaded_at is not None

    def key_for(self, kid: str | None) -> RSAPublicKey:
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values()))
            raise UnknownKey("token has no kid and the key set has several keys")
        try:
            return self._keys[kid]
        except KeyError:
            raise UnknownKey("token signed with an unknown key") from None

    def due(self) -> bool:
        """Never loaded, or older than its max age, and not backing off after a failure."""
        now = self._clock()
        return now >= self._expires_at and now >= self._retry_at

    def may_refresh(self) -> bool:
        """An early load for an unknown ``kid`` is allowed now."""
        now = self._clock()
        recent = self._loaded_at is not None and now - self._loaded_at < self._refresh_interval
        return not recent and now >= self._retry_at

    async def refresh(self) -> None:
        """Load the key set again, unless a concurrent call just did: callers that arrive
        while a load runs wait for it instead of fetching the document once each (and a
        load that failed fails them all). Raises :class:`DependencyUnavailable` when the
        document cannot be loaded, at once while backing off."""
        asked = (self._loaded_at, self._failures)
        async with self._loading:
            if (self._loaded_at, self._failures) != asked:
                if self._loaded_at == asked[0]:
                    raise DependencyUnavailable("cannot load the JWKS; retrying later")
                return
            now = self._clock()
            if now < self._retry_at:
                raise DependencyUnavailable("cannot load the JWKS; retrying later")
            try:
                response = await self._client.get(self._url)
                response.raise_for_status()
                document = response.json()
                entries = document.get("keys") if isinstance(document, dict) else None
                if not isinstance(entries, list):
                    raise ValueError("the JWKS document has no list of keys")
            except (httpx.HTTPError, ValueError) as exc:
                self._failures += 1
                delay = min(self._retry_max, self._retry_base * 2 ** (self._failures - 1))
                self._retry_at = self._clock() + delay
                log.warning("cannot load the JWKS (%s); next attempt in %.0f s", exc, delay)
                raise DependencyUnavailable(f"cannot load the JWKS: {exc}") from exc
            self._keys = _rsa_signing_keys(entries)
            self._loaded_at = now = self._clock()
            self._expires_at = now + self._age_of(response.headers.get("cache-control"))
            self._failures, self._retry_at = 0, -math.inf
            self.generation += 1

    def _age_of(self, cache_control: str | None) -> float:
        found = _MAX_AGE.search(cache_control or "")
        if found is None:
            return self._max_age
        return min(self._max_age_cap, max(self._refresh_interval, float(found.group(1))))


_MAX_AGE = re.compile(r"(?:^|[,\s])max-age=(\d{1,9})(?:$|[,\s])", re.IGNORECASE)


def _rsa_signing_keys(entries: list[Any]) -> dict[str, RSAPublicKey]:
    """The RSA signing keys of a JWKS ``keys`` list by ``kid``; an entry that is not a usable
    RSA key is skipped (and logged), so one bad entry does not hide the good ones."""
    keys: dict[str, RSAPublicKey] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            log.warning("JWKS entry skipped: not an object")
            continue
        if entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK.from_dict(entry, algorithm="RS256")
            keys[str(entry.get("kid", ""))] = _as_rsa(jwk.key)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            log.warning("JWKS entry %r skipped: %s", entry.get("kid"), exc)
    return keys


class TokenVerifier:
    """Verifies RS256 tokens against a key source and a policy."""

    def __init__(
        self, keys: KeySource, policy: TokenPolicy, cache: VerifiedTokens[Claims] | None = None
    ) -> None:
        self._keys = keys
        self._policy = policy
        self._cache: VerifiedTokens[Claims] = VerifiedTokens() if cache is None else cache
        self._generation = 0  # of the JWKS key set the cached tokens were verified with

    def verify(self, token: str) -> Claims:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise AuthenticationFailed("token missing or too long", code="TOKEN_INVALID")
        known = self._cache.get(token)
        if known is not None:
            return known
        claims = self._check(token)
        self._cache.put(token, claims, claims.expires_at + self._policy.leeway_seconds)
        return claims

    def _check(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationFailed("token is malformed", code="TOKEN_INVALID") from None
        if header.get("alg") not in ALGORITHMS:
            raise AuthenticationFailed("token algorithm is not accepted", code="TOKEN_INVALID")
        kid = header.get("kid")
        key = self._keys.key_for(kid if isinstance(kid, str) else None)
        policy = self._policy
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=policy.audience,
                issuer=policy.issuer,
                leeway=policy.leeway_seconds,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": policy.audience is not None,
                    "verify_iss": policy.issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("token has expired", code="TOKEN_EXPIRED") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationFailed(
                "token is not valid yet", code="TOKEN_NOT_YET_VALID"
            ) from None
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed(f"token rejected: {exc}", code="TOKEN_INVALID") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationFailed("token has no subject", code="TOKEN_INVALID")
        issuer = claims.get("iss")
        return Claims(
            subject=subject,
            expires_at=float(claims["exp"]),
            issuer=issuer if isinstance(issuer, str) else None,
            raw=claims,
        )

    async def verify_async(self, token: str) -> Claims:
        """Like :meth:`verify`, loading a JWKS key set first when it is due (or when the
        token names a key it does not have)."""
        keys = self._keys
        if not isinstance(keys, JwksKeys):
            return self.verify(token)
        if keys.due():
            try:
                await keys.refresh()
            except DependencyUnavailable:
                if not keys.loaded:
                    raise
                # the last key set loaded stays in use until a load succeeds
        if not keys.loaded:
            raise DependencyUnavailable("the JWKS has not been loaded yet; retrying later")
        self._follow(keys)
        try:
            return self.verify(token)
        except UnknownKey:
            if not keys.may_refresh():
                raise
        await keys.refresh()
        self._follow(keys)
        return self.verify(token)

    def _follow(self, keys: JwksKeys) -> None:
        """Forget the tokens verified with an earlier key set (a key may be gone)."""
        if keys.generation != self._generation:
            self._cache.clear()
            self._generation = keys.generation


class UserTokenVerifier:
    """A :class:`TokenVerifier` whose subject is a user's email."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def identify(self, token: str) -> UserIdentity:
        claims = await self._verifier.verify_async(token)
        try:
            email = normalise_email(claims.subject, field="sub")
        except InvalidInput:
            raise AuthenticationFailed(
                "token subject is not an email", code="TOKEN_INVALID"
            ) from None
        issued = claims.raw.get("iat")
        issued_at = (
            float(issued)
            if isinstance(issued, int | float) and not isinstance(issued, bool)
            else None
        )
        return UserIdentity(email=email, expires_at=claims.expires_at, issued_at=issued_at)


def key_source(
    *,
    pem_file: str | None,
    jwks_url: str | None,
    client: httpx.AsyncClient,
    jwks_max_age: float = 300.0,
) -> KeySource:
    """The key source a service configured: a PEM file wins over a JWKS URL."""
    if pem_file:
        return StaticKey.from_file(pem_file)
    if jwks_url:
        return JwksKeys(jwks_url, client, max_age=jwks_max_age)
    raise ValueError("configure a public key file or a JWKS URL")


@dataclass(frozen=True, slots=True)
class Verifiers:
    """What a service checks tokens with: users' tokens, and FlairBit's service tokens (same
    signing keys, their own issuer and audience)."""

    users: UserTokenVerifier
    flairbit: TokenVerifier


def verifiers(
    settings: BaseSettings,
    client: httpx.AsyncClient,
    *,
    flairbit_issuer: str = "flairbit",
    flairbit_audience: str = "chat-service",
) -> Verifiers:
    keys = key_source(
        pem_file=settings.jwt_public_key_file,
        jwks_url=settings.jwt_jwks_url,
        client=client,
        jwks_max_age=settings.jwt_jwks_max_age_seconds,
    )
    user_policy = TokenPolicy(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_seconds=settings.jwt_leeway_seconds,
    )
    service_policy = TokenPolicy(
        issuer=flairbit_issuer,
        audience=flairbit_audience,
        leeway_seconds=settings.jwt_leeway_seconds,
    )
    return Verifiers(
        UserTokenVerifier(TokenVerifier(keys, user_policy)), TokenVerifier(keys, service_policy)
    )
