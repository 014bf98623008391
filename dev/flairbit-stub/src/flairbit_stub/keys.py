"""FlairBit's signing key (created once, then reused), its JWKS, and the chat service's key.

The private key lives in ``<key dir>/flairbit_dev_private.pem`` (mode 0600). It is created
with a write-then-link so that two processes starting at once never see a half-written file
and never replace each other's key. The public half is rewritten on every start.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import KeyFileError

PRIVATE_KEY_FILENAME = "flairbit_dev_private.pem"
PUBLIC_KEY_FILENAME = "flairbit_dev_public.pem"
RSA_KEY_BITS = 2048

log = logging.getLogger(__name__)


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the DER (SubjectPublicKeyInfo) public key."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey
    kid: str

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self) -> dict[str, str]:
        numbers = self.public_key.public_numbers()
        return {
            "kty": "RSA",
            "kid": self.kid,
            "use": "sig",
            "alg": "RS256",
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
        }

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.jwk()]}


def _parse_private_key(pem: bytes, path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a readable unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{path} does not hold an RSA private key")
    return key


def _write_new_file(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` holding ``data``; False (and no change) when it already exists."""
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(scratch, path)
        except FileExistsError:
            return False
        return True
    finally:
        scratch.unlink(missing_ok=True)


def _replace_file(path: Path, data: bytes, mode: int) -> None:
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


def load_or_create_signing_key(key_dir: Path) -> SigningKey:
    """Load the stub's RSA key from ``key_dir``, creating the directory and key when absent.

    Also (re)writes the public key PEM next to it. Blocking: RSA generation takes a moment.
    """
    key_dir.mkdir(parents=True, exist_ok=True)
    private_path = key_dir / PRIVATE_KEY_FILENAME
    if not private_path.exists():
        fresh = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
        pem = fresh.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        if _write_new_file(private_path, pem, 0o600):
            log.info("generated a new FlairBit dev signing key at %s", private_path)
    private_key = _parse_private_key(private_path.read_bytes(), private_path)
    if private_key.key_size < RSA_KEY_BITS:
        raise KeyFileError(f"{private_path} holds a {private_key.key_size}-bit key; need 2048+")
    signing_key = SigningKey(private_key=private_key, kid=key_id(private_key.public_key()))
    _replace_file(key_dir / PUBLIC_KEY_FILENAME, signing_key.public_pem(), 0o644)
    return signing_key


class PublicKeyFile:
    """An RSA public key read from a PEM file when asked for, so it may appear after start.

    The parsed key is kept until the file's size, inode or modification time changes. A file
    that is missing or unusable yields ``None``.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._key: rsa.RSAPublicKey | None = None

    @property
    def path(self) -> Path:
        return self._path

    def current(self) -> rsa.RSAPublicKey | None:
        try:
            info = self._path.stat()
        except OSError:
            self._stamp, self._key = None, None
            return None
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp != self._stamp:
            self._stamp, self._key = stamp, self._read()
        return self._key

    def _read(self) -> rsa.RSAPublicKey | None:
        try:
            key = serialization.load_pem_public_key(self._path.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            log.warning("cannot use the chat service public key %s: %s", self._path, exc)
            return None
        if not isinstance(key, rsa.RSAPublicKey):
            log.warning("the chat service public key %s is not an RSA key", self._path)
            return None
        return key
