from __future__ import annotations

from pathlib import Path

import pytest

from flairbit_stub.errors import SettingsError
from flairbit_stub.settings import Settings


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8090
    assert settings.key_dir == Path(".run/keys")
    assert settings.issuer == "flairbit"
    assert settings.user_audience == "chat"
    assert settings.service_audience == "chat-service"
    assert settings.user_token_ttl == 3600
    assert settings.chat_service_public_key_file == Path(".run/keys/chat_service_public.pem")
    assert settings.chat_service_issuer == "chat-service"
    assert settings.chat_service_audience == "flairbit"
    assert settings.intents == {"dating", "freelance", "rideshare"}


def test_environment_overrides(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "FLAIRBIT_HOST": "0.0.0.0",
            "FLAIRBIT_PORT": "9001",
            "FLAIRBIT_KEY_DIR": str(tmp_path),
            "FLAIRBIT_ISSUER": "fb",
            "FLAIRBIT_USER_AUDIENCE": "users",
            "FLAIRBIT_SERVICE_AUDIENCE": "svc",
            "FLAIRBIT_USER_TOKEN_TTL": "60",
            "FLAIRBIT_CHAT_SERVICE_ISSUER": "chat",
            "FLAIRBIT_CHAT_SERVICE_AUDIENCE": "fb-aud",
            "FLAIRBIT_INTENTS": " dating , pets,,",
        }
    )
    assert (settings.host, settings.port, settings.key_dir) == ("0.0.0.0", 9001, tmp_path)
    assert (settings.issuer, settings.user_audience, settings.service_audience) == (
        "fb",
        "users",
        "svc",
    )
    assert settings.user_token_ttl == 60
    assert settings.chat_service_public_key_file == tmp_path / "chat_service_public.pem"
    assert (settings.chat_service_issuer, settings.chat_service_audience) == ("chat", "fb-aud")
    assert settings.intents == {"dating", "pets"}


def test_explicit_chat_service_key_file(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"FLAIRBIT_CHAT_SERVICE_PUBLIC_KEY_FILE": str(tmp_path / "chat.pem")}
    )
    assert settings.chat_service_public_key_file == tmp_path / "chat.pem"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLAIRBIT_PORT", "http"),
        ("FLAIRBIT_PORT", "70000"),
        ("FLAIRBIT_USER_TOKEN_TTL", "0"),
        ("FLAIRBIT_USER_TOKEN_TTL", "1.5"),
        ("FLAIRBIT_INTENTS", " , ,"),
    ],
)
def test_unusable_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
