"""Settings every service shares: where it listens, how it logs, how it checks user tokens."""

from __future__ import annotations

import msgspec


class BaseSettings(msgspec.Struct, kw_only=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    # User JWTs (from FlairBit): a PEM public key file, or a JWKS URL (kid-selected).
    jwt_public_key_file: str | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: float = 30.0
    # A JWKS key set is used for this long (or its Cache-Control max-age, within 30 s..1 h),
    # then loaded again: a key FlairBit withdrew is refused within this time.
    jwt_jwks_max_age_seconds: float = 300.0
