"""Verification of user JWTs issued by FlairBit (and of FlairBit's service JWTs).

RS256 only: the algorithm list is fixed here and never read from the token. ``exp`` and ``sub``
are required; ``iss``, ``aud`` and ``nbf`` are checked when configured or present. Keys come from
a PEM file or from a JWKS document (selected by ``kid``), refreshed when an unknown ``kid``
appears, at most once per ``refresh_interval``.
"""

from __future__ import annotations

import asyncio
import logging
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._client = client
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._keys: dict[str, RSAPublicKey] = {}
        self._loaded_at: float | None = None
        self._loading = asyncio.Lock()

    def key_for(self, kid: str | None) -> RSAPublicKey:
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values()))
            raise UnknownKey("token has no kid and the key set has several keys")
        try:
            return self._keys[kid]
        except KeyError:
            raise UnknownKey("token signed with an unknown key") from None

    def may_refresh(self) -> bool:
        return self._loaded_at is None or self._clock() - self._loaded_at >= self._refresh_interval

    async def refresh(self) -> None:
        """Load the key set again, unless a concurrent call just did: callers that arrive
        while a load runs wait for it instead of fetching the document once each."""
        asked_at = self._loaded_at
        async with self._loading:
            if self._loaded_at != asked_at:
                return
            try:
                response = await self._client.get(self._url)
                response.raise_for_status()
                document = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise DependencyUnavailable(f"cannot load the JWKS: {exc}") from exc
            entries = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(entries, list):
                raise DependencyUnavailable("the JWKS document has no list of keys")
            self._keys = _rsa_signing_keys(entries)
            self._loaded_at = self._clock()


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
        """Like :meth:`verify`, loading a JWKS key set first when needed."""
        keys = self._keys
        if isinstance(keys, JwksKeys):
            try:
                return self.verify(token)
            except UnknownKey:
                if not keys.may_refresh():
                    raise
            await keys.refresh()
            self._cache.clear()  # a key may have been withdrawn
        return self.verify(token)


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
        return UserIdentity(email=email, expires_at=claims.expires_at)


def key_source(
    *, pem_file: str | None, jwks_url: str | None, client: httpx.AsyncClient
) -> KeySource:
    """The key source a service configured: a PEM file wins over a JWKS URL."""
    if pem_file:
        return StaticKey.from_file(pem_file)
    if jwks_url:
        return JwksKeys(jwks_url, client)
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
        pem_file=settings.jwt_public_key_file, jwks_url=settings.jwt_jwks_url, client=client
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
