"""session-svc settings, read once from the environment (variable = field name upper-cased)."""

from __future__ import annotations

from chat_common import settings
from chat_common.config import BaseSettings


class Settings(BaseSettings, kw_only=True, frozen=True):
    port: int = 8081
    database_url: str = "postgresql://postgres@127.0.0.1:5432/chat"
    db_pool_max: int = 10
    flairbit_url: str = "http://127.0.0.1:8090"
    flairbit_timeout_seconds: float = 2.0
    # The chat service's own key, for service JWTs presented to FlairBit.
    service_private_key_file: str = ".run/keys/chat_service_private.pem"
    service_jwt_issuer: str = "chat-service"
    service_jwt_audience: str = "flairbit"
    service_jwt_ttl_seconds: float = 120.0
    profile_cache_ttl_seconds: int = 300
    # FlairBit's profile-changed reaches one instance; through Redis pub/sub it reaches all.
    # Without it, each instance's cache forgets a changed profile within its TTL.
    redis_url: str | None = None
    redis_timeout_seconds: float = 0.5
    # Where the edges keep presence (GET /api/chat/presence reads it; without REDIS_URL it
    # answers 503 PRESENCE_UNAVAILABLE). Must match the edges' PRESENCE_KEY_PREFIX.
    presence_key_prefix: str = "chat:presence:"
    # The public-key registry: current keys (devices) per user, and revoked keys kept per
    # user (the oldest revoked go first).
    max_keys_per_user: int = 10
    revoked_keys_kept: int = 10
    # Key changes (publish or replace, revoke) per user: a token bucket, shared through
    # REDIS_URL when set (each instance's own while Redis cannot be reached). Each change is an
    # event to every peer; a request that changes nothing costs nothing.
    key_change_burst: int = 20
    key_change_rate_per_second: float = 0.05
    breaker_threshold: int = 5
    breaker_reset_seconds: float = 15.0
    # FlairBit's own service JWTs (for /internal/flairbit/*): its signing key is the one of the
    # user tokens (JWT_JWKS_URL or JWT_PUBLIC_KEY_FILE), with this issuer and audience.
    flairbit_service_issuer: str = "flairbit"
    flairbit_service_audience: str = "chat-service"
    # The longest lifetime of a user token FlairBit issues: after an erasure the user's older
    # tokens are refused for this long (plus JWT_LEEWAY_SECONDS), through REDIS_URL.
    user_token_max_lifetime_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_keys_per_user < 1 or self.revoked_keys_kept < 0:
            raise ValueError("max_keys_per_user must be >= 1 and revoked_keys_kept >= 0")
        if self.key_change_burst < 1 or self.key_change_rate_per_second <= 0:
            raise ValueError("key_change_burst must be >= 1 and key_change_rate_per_second > 0")
        if self.user_token_max_lifetime_seconds <= 0:
            raise ValueError("user_token_max_lifetime_seconds must be > 0")


def from_env() -> Settings:
    return settings.load(Settings)
