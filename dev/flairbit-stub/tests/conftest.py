"""Fixtures: a key directory under tmp_path, the chat service's key pair, a running stub."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flairbit_stub.app import create_app
from flairbit_stub.keys import PRIVATE_KEY_FILENAME
from flairbit_stub.settings import CHAT_SERVICE_KEY_FILENAME, Settings


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="session")
def chat_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def stub_private_key() -> rsa.RSAPrivateKey:
    """Generated once per session and seeded into each key dir, to keep the tests quick."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_dir(tmp_path: Path, stub_private_key: rsa.RSAPrivateKey) -> Path:
    directory = tmp_path / "keys"
    directory.mkdir()
    (directory / PRIVATE_KEY_FILENAME).write_bytes(private_pem(stub_private_key))
    return directory


@pytest.fixture
def chat_public_key_file(key_dir: Path, chat_private_key: rsa.RSAPrivateKey) -> Path:
    path = key_dir / CHAT_SERVICE_KEY_FILENAME
    path.write_bytes(public_pem(chat_private_key))
    return path


@pytest.fixture
def settings(key_dir: Path) -> Settings:
    return Settings.from_env({"FLAIRBIT_KEY_DIR": str(key_dir)})


@pytest.fixture
async def client(
    settings: Settings, chat_public_key_file: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        LifespanManager(create_app(settings)) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://flairbit.test"
        ) as http,
    ):
        yield http


@pytest.fixture
def sign_chat_token(chat_private_key: rsa.RSAPrivateKey) -> Callable[..., str]:
    """Signs a chat service token; keyword arguments replace or (with None) drop claims."""

    def sign(*, key: Any = None, algorithm: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": "chat-service",
            "aud": "flairbit",
            "sub": "session-svc",
            "iat": now,
            "exp": now + 120,
        }
        payload.update(claims)
        payload = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(payload, chat_private_key if key is None else key, algorithm=algorithm)

    return sign
