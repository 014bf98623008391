from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flairbit_stub.app import create_app
from flairbit_stub.errors import KeyFileError
from flairbit_stub.keys import (
    PRIVATE_KEY_FILENAME,
    PUBLIC_KEY_FILENAME,
    PublicKeyFile,
    load_or_create_signing_key,
)
from flairbit_stub.settings import Settings


def _der(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_first_start_creates_directory_and_private_key(tmp_path: Path) -> None:
    key_dir = tmp_path / "a" / "b"
    key = load_or_create_signing_key(key_dir)
    private_file = key_dir / PRIVATE_KEY_FILENAME
    assert stat.S_IMODE(private_file.stat().st_mode) == 0o600
    assert key.private_key.key_size == 2048
    assert key.kid == hashlib.sha256(_der(key.public_key)).hexdigest()[:16]
    public = serialization.load_pem_public_key((key_dir / PUBLIC_KEY_FILENAME).read_bytes())
    assert isinstance(public, rsa.RSAPublicKey)
    assert _der(public) == _der(key.public_key)
    assert [p.name for p in key_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_later_starts_reuse_the_key(tmp_path: Path) -> None:
    first = load_or_create_signing_key(tmp_path)
    (tmp_path / PUBLIC_KEY_FILENAME).unlink()
    second = load_or_create_signing_key(tmp_path)
    assert second.kid == first.kid
    assert (tmp_path / PUBLIC_KEY_FILENAME).exists()


def test_unreadable_private_key_is_reported(tmp_path: Path) -> None:
    (tmp_path / PRIVATE_KEY_FILENAME).write_text("not a key")
    with pytest.raises(KeyFileError, match=PRIVATE_KEY_FILENAME):
        load_or_create_signing_key(tmp_path)


def test_jwks_describes_the_signing_key(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path)
    (entry,) = key.jwks()["keys"]
    assert entry["kty"] == "RSA"
    assert entry["use"] == "sig"
    assert entry["alg"] == "RS256"
    assert entry["kid"] == key.kid
    public = jwt.PyJWK(dict(entry)).key
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == key.public_key.public_numbers()


async def test_key_is_reused_across_app_restarts(tmp_path: Path) -> None:
    settings = Settings.from_env({"FLAIRBIT_KEY_DIR": str(tmp_path / "keys")})
    kids = []
    for _ in range(2):
        async with (
            LifespanManager(create_app(settings)) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://flairbit.test"
            ) as http,
        ):
            response = await http.get("/.well-known/jwks.json")
            assert response.status_code == 200
            kids.append(response.json()["keys"][0]["kid"])
    assert kids[0] == kids[1]
    assert (tmp_path / "keys" / PRIVATE_KEY_FILENAME).exists()
    assert (tmp_path / "keys" / PUBLIC_KEY_FILENAME).exists()


def test_public_key_file_is_read_when_asked(
    tmp_path: Path, chat_private_key: rsa.RSAPrivateKey
) -> None:
    path = tmp_path / "chat.pem"
    source = PublicKeyFile(path)
    assert source.current() is None
    path.write_bytes(
        chat_private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    found = source.current()
    assert found is not None
    assert found.public_numbers() == chat_private_key.public_key().public_numbers()
    assert source.current() is found
    path.write_text("garbage")
    assert source.current() is None
    path.unlink()
    assert source.current() is None
