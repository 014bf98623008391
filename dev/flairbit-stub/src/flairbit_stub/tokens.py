"""JWTs: the user and service tokens the stand-in signs, and the chat service tokens it accepts.

Signing takes the time as an argument (whole seconds since the epoch); verification relies on
PyJWT's own clock with a small leeway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from .errors import Unauthenticated
from .keys import SigningKey

# Hard-coded: the algorithm is never taken from the token's header.
ALGORITHMS = ["RS256"]
SERVICE_TOKEN_TTL = 120
SERVICE_SUBJECT = "flairbit"
VERIFY_LEEWAY_SECONDS = 5
MAX_TOKEN_LENGTH = 8192

# Most specific first: several of these subclass InvalidTokenError.
_REJECTIONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "the service token has expired"),
    (jwt.ImmatureSignatureError, "the service token is not valid yet"),
    (jwt.InvalidIssuerError, "the service token has the wrong issuer"),
    (jwt.InvalidAudienceError, "the service token has the wrong audience"),
    (jwt.MissingRequiredClaimError, "the service token lacks a required claim"),
    (jwt.InvalidAlgorithmError, "the service token is not signed with RS256"),
    (jwt.InvalidSignatureError, "the service token's signature does not verify"),
)


def _sign(claims: Mapping[str, Any], key: SigningKey) -> str:
    return jwt.encode(dict(claims), key.private_key, algorithm="RS256", headers={"kid": key.kid})


def user_token(
    key: SigningKey,
    *,
    email: str,
    issuer: str,
    audience: str,
    now: int,
    ttl_seconds: int,
    not_before_offset: int = 0,
) -> str:
    """A user JWT for the (already normalised) ``email``; a negative TTL is already expired."""
    return _sign(
        {
            "sub": email,
            "iss": issuer,
            "aud": audience,
            "iat": now,
            "nbf": now + not_before_offset,
            "exp": now + ttl_seconds,
        },
        key,
    )


def service_token(key: SigningKey, *, issuer: str, audience: str, now: int) -> str:
    """FlairBit's own short-lived token for calling chat's ``/internal`` endpoints."""
    return _sign(
        {
            "sub": SERVICE_SUBJECT,
            "iss": issuer,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + SERVICE_TOKEN_TTL,
        },
        key,
    )


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        raise Unauthenticated("an Authorization: Bearer <service token> header is required")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("the Authorization header must be 'Bearer <service token>'")
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthenticated("the service token is too long")
    return token


def verify_service_token(
    token: str,
    key: RSAPublicKey | None,
    *,
    issuer: str,
    audience: str,
) -> dict[str, Any]:
    """The claims of a chat service token, or :class:`Unauthenticated` with the reason."""
    if key is None:
        raise Unauthenticated("FlairBit has no chat service public key to check tokens with")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            issuer=issuer,
            audience=audience,
            leeway=VERIFY_LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        reason = next(
            (text for cls, text in _REJECTIONS if isinstance(exc, cls)),
            "the service token is malformed",
        )
        raise Unauthenticated(reason) from None
    return claims
