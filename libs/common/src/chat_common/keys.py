"""Users' public keys for end-to-end encryption: the wire DTOs of the key registry (REST and
the ``keys`` event) and the names every service shares (msgspec only).

A user publishes one public key per device, each under an id of the client's choosing
(``keyId``); the registry keeps the raw key, its algorithm and a ``version`` that grows with
every change of any key (a later change has a higher version), and computes a
``fingerprint`` users can compare out of band. The private keys never leave the devices.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Final, Literal

import msgspec

from .dto import Request, Response

ALGORITHMS: Final[dict[str, int]] = {"X25519": 32, "ECDH-P256": 65}
"""The algorithms a key may be for, with the length of a raw public key of each: X25519
(RFC 7748, 32 bytes) and ECDH on P-256 (an uncompressed SEC 1 point, 0x04 || X || Y, as
WebCrypto's ``exportKey("raw")`` gives it)."""

KEY_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
PUBLIC_KEY_MAX_CHARS: Final = 128  # base64url of the longest raw key (65 bytes: 87 chars)

Change = Literal["added", "replaced", "revoked"]
KEYS_EVENT: Final = "keys"  # x-event of a key change

PublicKeyText = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=PUBLIC_KEY_MAX_CHARS,
        description="The raw public key in base64url without padding (RFC 4648 §5): 32 bytes "
        "for X25519, 65 (an uncompressed point) for ECDH-P256",
    ),
]
AlgorithmName = Annotated[
    str,
    msgspec.Meta(
        max_length=32,
        description="The key agreement the key is for",
        extra_json_schema={"enum": list(ALGORITHMS)},
    ),
]
Fingerprint = Annotated[
    str,
    msgspec.Meta(
        description="SHA-256 of the raw public key, in lower-case hex, 16 groups of 4 digits "
        "separated by spaces: what two users compare out of band"
    ),
]


class PublishKeyRequest(Request, frozen=True):
    """``PUT /api/chat/keys/{keyId}``: the caller's public key for one of their devices."""

    algorithm: AlgorithmName
    public_key: PublicKeyText


class PublicKeyView(Response, frozen=True):
    """A user's current public key for one device."""

    email: str
    key_id: str
    algorithm: str
    public_key: PublicKeyText
    fingerprint: Fingerprint
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class UserKeys(Response, frozen=True):
    """One user's current keys, oldest first."""

    email: str
    keys: list[PublicKeyView]


class SessionKeys(Response, frozen=True):
    """Both participants' current keys (``GET /api/chat/{sessionId}/keys``)."""

    session_id: uuid.UUID
    participants: tuple[UserKeys, UserKeys]


class KeyChangeEvent(Response, frozen=True, omit_defaults=True):
    """What ``/user/queue/keys`` carries: a user who shares a session with the subscriber (or
    the subscriber, on another device) added, replaced or revoked a key. Events may arrive
    twice or out of order: keep the highest ``version`` per (email, keyId); the registry is
    the truth."""

    email: str
    key_id: str
    algorithm: str
    change: Change
    fingerprint: Fingerprint
    version: int
    changed_at: dt.datetime
    previous_fingerprint: Fingerprint | None = None
    """The replaced key's, on ``replaced``."""
