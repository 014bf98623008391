"""Service JWTs the chat services present to FlairBit: RS256, short-lived, reused."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey


def key_id(public_key: RSAPublicKey) -> str:
    """A stable key id: the first 16 hex digits of the SHA-256 of the DER public key."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def load_private_key(path: str | Path) -> RSAPrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA private key")
    return key


class ServiceTokenSigner:
    """Signs one token and hands it out until it is within ``renew_before`` of its expiry."""

    def __init__(
        self,
        private_key: RSAPrivateKey,
        *,
        issuer: str,
        audience: str,
        subject: str | None = None,
        ttl_seconds: float = 120.0,
        renew_before: float = 30.0,
        kid: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if renew_before >= ttl_seconds:
            raise ValueError("renew_before must be shorter than the token lifetime")
        self._key = private_key
        self._issuer = issuer
        self._audience = audience
        self._subject = subject or issuer
        self._ttl = ttl_seconds
        self._renew_before = renew_before
        self._kid = kid or key_id(private_key.public_key())
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0

    @property
    def kid(self) -> str:
        return self._kid

    def token(self) -> str:
        now = self._clock()
        if self._token is None or now >= self._expires_at - self._renew_before:
            issued = int(now)
            self._expires_at = issued + self._ttl
            self._token = jwt.encode(
                {
                    "iss": self._issuer,
                    "aud": self._audience,
                    "sub": self._subject,
                    "iat": issued,
                    "nbf": issued,
                    "exp": int(self._expires_at),
                },
                self._key,
                algorithm="RS256",
                headers={"kid": self._kid},
            )
        return self._token
