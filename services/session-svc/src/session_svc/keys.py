"""Pure rules of the public-key registry: what a key id and a public key may be, the
fingerprint, what a publish or a revoke changes, and who is told (no I/O).

A public key is refused unless it is a valid key of its algorithm: base64url without padding
in its one canonical spelling, the algorithm's exact raw length, and a point the key
agreement accepts (P-256: on the curve; X25519: not of small order, which would make every
shared secret all zeros).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec, x25519

from chat_common import b64url, routing
from chat_common.errors import Conflict, InvalidInput, NotFound
from chat_common.keys import ALGORITHMS, KEY_ID_PATTERN, Change

_KEY_ID = re.compile(KEY_ID_PATTERN)
# Any fixed private key shows a small-order X25519 point: the shared secret is all zeros,
# which cryptography refuses.
_PROBE = x25519.X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))

EVENT_KEYS_PER_ROW: Final = 500
"""Routing keys per outbox row (the routing key and the rest in ``CC``): one publish each."""


def key_id(raw: str) -> str:
    """A key id as the client chose it: 1 to 64 of ``A-Z a-z 0-9 _ -``."""
    if not _KEY_ID.fullmatch(raw):
        raise InvalidInput(
            "keyId: 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'",
            code="KEY_ID_INVALID",
            field="keyId",
        )
    return raw


def algorithm(name: str) -> str:
    if name not in ALGORITHMS:
        raise InvalidInput(
            f"algorithm: one of {', '.join(ALGORITHMS)}",
            code="ALGORITHM_UNSUPPORTED",
            field="algorithm",
        )
    return name


def _bad_key(why: str) -> InvalidInput:
    return InvalidInput(f"publicKey: {why}", code="PUBLIC_KEY_INVALID", field="publicKey")


def public_key(algorithm_name: str, text: str) -> bytes:
    """The raw public key of ``text`` (base64url, no padding) for ``algorithm_name``."""
    size = ALGORITHMS[algorithm(algorithm_name)]
    raw = b64url.decode(text)  # one spelling per key
    if raw is None:
        raise _bad_key("base64url without padding (A-Z, a-z, 0-9, '-', '_'), in its one spelling")
    if len(raw) != size:
        raise _bad_key(f"an {algorithm_name} public key is {size} bytes, not {len(raw)}")
    if algorithm_name == "X25519":
        try:
            _PROBE.exchange(x25519.X25519PublicKey.from_public_bytes(raw))
        except ValueError:
            raise _bad_key("a point of small order, not a usable X25519 key") from None
    else:
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError:
            raise _bad_key("not an uncompressed point on P-256") from None
    return raw


def fingerprint(raw: bytes) -> str:
    """SHA-256 of the raw key, lower-case hex in 16 groups of 4 separated by spaces."""
    digest = hashlib.sha256(raw).hexdigest()
    return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


@dataclass(frozen=True, slots=True)
class Stored:
    """What the registry holds for one key id of a user."""

    key_id: str
    algorithm: str
    public_key: bytes
    revoked: bool


@dataclass(frozen=True, slots=True)
class Publish:
    """What a publish does: ``change`` None when the same key is already current (nothing
    is written, nobody is told)."""

    change: Change | None
    previous: bytes | None = None  # the replaced key


def publish(
    stored: Sequence[Stored], key: str, algorithm_name: str, raw: bytes, limit: int
) -> Publish:
    """Decide a publish of ``raw`` under ``key`` among the user's ``stored`` keys: a new key
    (or one that was revoked) is ``added`` while the user has fewer than ``limit`` current
    keys; another key under a current id is ``replaced``; the same key changes nothing."""
    found = next((s for s in stored if s.key_id == key), None)
    if found is not None and not found.revoked:
        if (found.algorithm, found.public_key) == (algorithm_name, raw):
            return Publish(None)
        return Publish("replaced", found.public_key)
    current = sum(1 for s in stored if not s.revoked)
    if current >= limit:
        raise Conflict(
            f"at most {limit} keys per user: revoke one (DELETE /api/chat/keys/{{keyId}}) "
            "before adding another",
            code="KEY_LIMIT_REACHED",
        )
    return Publish("added")


def revoke(stored: Sequence[Stored], key: str) -> bool:
    """Whether revoking ``key`` changes anything (False: already revoked); a key id the user
    never published is ``KEY_NOT_FOUND``."""
    found = next((s for s in stored if s.key_id == key), None)
    if found is None:
        raise NotFound("you have no key with that id", code="KEY_NOT_FOUND")
    return not found.revoked


def event_routes(owner: str, peers: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Where a key change of ``owner`` goes: the owner's own user key (their other devices)
    and each peer's, as (routing key, CC keys) per outbox row, at most
    :data:`EVENT_KEYS_PER_ROW` keys a row."""
    keys = list(dict.fromkeys(routing.user_key(e) for e in (owner, *peers)))
    rows = []
    for start in range(0, len(keys), EVENT_KEYS_PER_ROW):
        chunk = keys[start : start + EVENT_KEYS_PER_ROW]
        rows.append((chunk[0], chunk[1:]))
    return rows
