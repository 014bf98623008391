"""Settings of the FlairBit stand-in, read once from ``FLAIRBIT_*`` environment variables.

Every variable is optional; :meth:`Settings.from_env` applies the defaults and raises
:class:`~flairbit_stub.errors.SettingsError` for a value it cannot use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import SettingsError

DEFAULT_INTENTS = ("dating", "freelance", "rideshare")
CHAT_SERVICE_KEY_FILENAME = "chat_service_public.pem"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8090
    key_dir: Path = Path(".run/keys")
    issuer: str = "flairbit"
    user_audience: str = "chat"
    service_audience: str = "chat-service"
    user_token_ttl: int = 3600
    # Where the chat service's public key appears; read at request time, not at start.
    chat_service_public_key_file: Path = Path(".run/keys") / CHAT_SERVICE_KEY_FILENAME
    chat_service_issuer: str = "chat-service"
    chat_service_audience: str = "flairbit"
    intents: frozenset[str] = frozenset(DEFAULT_INTENTS)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def text(name: str, default: str) -> str:
            value = env.get(name, "").strip()
            return value or default

        def integer(name: str, default: int, *, low: int, high: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(f"{name} must be an integer, not {raw!r}") from None
            if not low <= value <= high:
                raise SettingsError(f"{name} must be between {low} and {high}, not {value}")
            return value

        key_dir = Path(text("FLAIRBIT_KEY_DIR", ".run/keys"))
        chat_key = env.get("FLAIRBIT_CHAT_SERVICE_PUBLIC_KEY_FILE", "").strip()
        intents = frozenset(
            part.strip()
            for part in text("FLAIRBIT_INTENTS", ",".join(DEFAULT_INTENTS)).split(",")
            if part.strip()
        )
        if not intents:
            raise SettingsError("FLAIRBIT_INTENTS must name at least one intent")
        return cls(
            host=text("FLAIRBIT_HOST", "127.0.0.1"),
            port=integer("FLAIRBIT_PORT", 8090, low=0, high=65535),
            key_dir=key_dir,
            issuer=text("FLAIRBIT_ISSUER", "flairbit"),
            user_audience=text("FLAIRBIT_USER_AUDIENCE", "chat"),
            service_audience=text("FLAIRBIT_SERVICE_AUDIENCE", "chat-service"),
            user_token_ttl=integer("FLAIRBIT_USER_TOKEN_TTL", 3600, low=1, high=366 * 86400),
            chat_service_public_key_file=(
                Path(chat_key) if chat_key else key_dir / CHAT_SERVICE_KEY_FILENAME
            ),
            chat_service_issuer=text("FLAIRBIT_CHAT_SERVICE_ISSUER", "chat-service"),
            chat_service_audience=text("FLAIRBIT_CHAT_SERVICE_AUDIENCE", "flairbit"),
            intents=intents,
        )
