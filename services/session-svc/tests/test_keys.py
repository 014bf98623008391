"""The public-key registry's rules (pure): key ids, public keys of each algorithm, the
fingerprint, what a publish or a revoke changes, and where its event goes."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from chat_common import b64url, routing
from chat_common.errors import ChatError, Conflict, InvalidInput, NotFound
from chat_common.keys import ALGORITHMS, KeyChangeEvent, PublishKeyRequest
from chat_common.web import decode_json
from session_svc import keys

RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw
POINT = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint


def x25519_key() -> bytes:
    return x25519.X25519PrivateKey.generate().public_key().public_bytes(*RAW)


def p256_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(*POINT)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def refused(call: Callable[[], object], code: str) -> ChatError:
    with pytest.raises(ChatError) as caught:
        call()
    assert caught.value.code == code, caught.value.detail
    return caught.value


@pytest.mark.parametrize("good", ["a", "phone-1", "Laptop_2", "x" * 64, "-_-"])
def test_key_ids(good: str) -> None:
    assert keys.key_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "x" * 65, "a b", "a/b", "a.b", "é", "a\n", "a\x00", "a%2Fb", "phone-1\n"]
)
def test_bad_key_ids(bad: str) -> None:
    error = refused(lambda: keys.key_id(bad), "KEY_ID_INVALID")
    assert isinstance(error, InvalidInput)
    assert error.field == "keyId"


def test_keys_of_both_algorithms_are_taken_as_raw_bytes() -> None:
    for algorithm, raw in (("X25519", x25519_key()), ("ECDH-P256", p256_key())):
        assert len(raw) == ALGORITHMS[algorithm]
        assert keys.public_key(algorithm, b64(raw)) == raw
        assert b64url.encode(raw) == b64(raw)  # how keys are answered


def test_unknown_algorithms_are_refused() -> None:
    text = b64(x25519_key())
    for name in ("x25519", "P-256", "RSA", "", "ECDH-P384"):
        with pytest.raises(InvalidInput) as caught:
            keys.public_key(name, text)
        assert (caught.value.code, caught.value.field) == ("ALGORITHM_UNSUPPORTED", "algorithm")


SMALL_ORDER_X25519 = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


# Generated once per process: the cases are numbered, so every xdist worker collects them alike.
BAD_KEYS = [
    ("X25519", b64(x25519_key())[:-1]),  # 31.x bytes
    ("X25519", b64(x25519_key() + b"\x00")),  # 33 bytes
    ("X25519", b64(p256_key())),  # the other algorithm's size
    ("ECDH-P256", b64(x25519_key())),
    ("ECDH-P256", b64(b"\x04" + bytes(64))),  # not on the curve
    ("ECDH-P256", b64(p256_key()[:33])),  # a compressed point's size
    ("X25519", b64(x25519_key()) + "="),  # padding
    ("X25519", base64.b64encode(b"\xff" * 32).decode().rstrip("=")),  # '+' and '/'
    ("X25519", base64.urlsafe_b64encode(b"\xfb" * 32).decode()),  # padded
    ("X25519", " " + b64(x25519_key())),
    ("X25519", b64(x25519_key())[:-1] + "\n"),
    ("X25519", "A" * 42 + "B"),  # stray bits in the last character: not canonical
    ("X25519", "a"),
    *(("X25519", b64(point)) for point in SMALL_ORDER_X25519),
]


@pytest.mark.parametrize(
    ("algorithm", "text"), BAD_KEYS, ids=[f"bad-key-{i}" for i in range(len(BAD_KEYS))]
)
def test_bad_public_keys(algorithm: str, text: str) -> None:
    error = refused(lambda: keys.public_key(algorithm, text), "PUBLIC_KEY_INVALID")
    assert error.field == "publicKey"


def test_the_request_bounds_its_fields() -> None:
    good = {"algorithm": "X25519", "publicKey": b64(x25519_key())}
    assert decode_json(msgspec.json.encode(good), PublishKeyRequest).algorithm == "X25519"
    for bad in (
        {**good, "publicKey": "A" * 129},
        {**good, "algorithm": "X" * 33},
        {**good, "keyId": "smuggled"},
        {"algorithm": "X25519"},
        {**good, "publicKey": 12},
    ):
        with pytest.raises(InvalidInput):
            decode_json(msgspec.json.encode(bad), PublishKeyRequest)


def test_the_fingerprint_is_sha256_in_groups() -> None:
    raw = x25519_key()
    printed = keys.fingerprint(raw)
    groups = printed.split(" ")
    assert len(groups) == 16
    assert all(len(g) == 4 for g in groups)
    assert "".join(groups) == hashlib.sha256(raw).hexdigest()
    assert keys.fingerprint(x25519_key()) != printed


A, B = x25519_key(), x25519_key()


def stored(key_id: str, raw: bytes = A, *, revoked: bool = False) -> keys.Stored:
    return keys.Stored(key_id, "X25519", raw, revoked)


def test_a_new_key_is_added_until_the_limit() -> None:
    assert keys.publish([], "k1", "X25519", A, 2) == keys.Publish("added")
    assert keys.publish([stored("k1")], "k2", "X25519", B, 2) == keys.Publish("added")
    error = refused(
        lambda: keys.publish([stored("k1"), stored("k2")], "k3", "X25519", B, 2),
        "KEY_LIMIT_REACHED",
    )
    assert isinstance(error, Conflict)


def test_revoked_keys_do_not_count_and_come_back_as_added() -> None:
    held = [stored("k1"), stored("k2", revoked=True)]
    assert keys.publish(held, "k3", "X25519", B, 2) == keys.Publish("added")
    assert keys.publish(held, "k2", "X25519", A, 2) == keys.Publish("added")
    full = [stored("k1"), stored("k3"), stored("k2", revoked=True)]
    refused(lambda: keys.publish(full, "k2", "X25519", A, 2), "KEY_LIMIT_REACHED")


def test_the_same_key_changes_nothing_and_another_replaces_it() -> None:
    held = [stored("k1"), stored("k2", B)]
    assert keys.publish(held, "k1", "X25519", A, 2) == keys.Publish(None)
    assert keys.publish(held, "k1", "X25519", B, 2) == keys.Publish("replaced", A)
    p256 = p256_key()
    assert keys.publish(held, "k1", "ECDH-P256", p256, 2) == keys.Publish("replaced", A)


def test_revoke() -> None:
    held = [stored("k1"), stored("k2", revoked=True)]
    assert keys.revoke(held, "k1") is True
    assert keys.revoke(held, "k2") is False  # already: nothing to do, nobody told
    error = refused(lambda: keys.revoke(held, "k3"), "KEY_NOT_FOUND")
    assert isinstance(error, NotFound)


def test_events_go_to_the_owner_and_every_peer_in_rows_of_bounded_size() -> None:
    owner = "alice@example.com"
    assert keys.event_routes(owner, []) == [(routing.user_key(owner), [])]
    peers = [f"p{i}@example.com" for i in range(keys.EVENT_KEYS_PER_ROW + 10)]
    rows = keys.event_routes(owner, [*peers, peers[0]])
    assert [len(cc) + 1 for _, cc in rows] == [keys.EVENT_KEYS_PER_ROW, 11]
    told = [key for key, cc in rows for key in (key, *cc)]
    assert told == [routing.user_key(e) for e in (owner, *peers)]


def test_the_event_body() -> None:
    event = KeyChangeEvent(
        email="alice@example.com",
        key_id="k1",
        algorithm="X25519",
        change="added",
        fingerprint=keys.fingerprint(A),
        version=3,
        changed_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
    )
    body = msgspec.json.decode(msgspec.json.encode(event))
    assert body == {
        "email": "alice@example.com",
        "keyId": "k1",
        "algorithm": "X25519",
        "change": "added",
        "fingerprint": keys.fingerprint(A),
        "version": 3,
        "changedAt": "2026-01-02T00:00:00Z",
    }
