"""Pure rules of encrypted messages: the envelope's schema, its shape and size, its
recipients, which of text and envelope a message has, and edits that keep a message's kind."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec
import pytest

from chat_common import b64url, keys
from chat_common.dto import (
    ENVELOPE_KEY_ID_PATTERN,
    ENVELOPE_MAX_RECIPIENTS,
    EditMessageRequest,
    Envelope,
    MessageView,
    SendMessageRequest,
)
from chat_common.errors import Conflict, ContentTooLarge, InvalidInput
from message_svc.domain import (
    Target,
    check_body,
    check_change,
    check_envelope,
    check_recipients,
    envelope_fingerprint,
)
from message_svc.events import message_event_template
from message_svc.repository import Member

A, B = "alice@example.com", "bob@example.com"


def envelope(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "alg": "X25519-HKDF-SHA256+A256GCM",
        "senderKeyId": "alice-laptop",
        "nonce": "AAECAwQFBgcICQoL",
        "recipients": [
            {"email": B, "keyId": "bob-phone", "wrappedKey": "q83vEjRWeJA"},
            {"email": A, "keyId": "alice-laptop", "wrappedKey": "ESIzRFVmd4g"},
        ],
        "ciphertext": "SGVsbG8gd29ybGQ",
    }
    body.update(overrides)
    return body


def decode(body: dict[str, Any]) -> Envelope:
    return msgspec.json.decode(msgspec.json.encode(body), type=Envelope)


def checked(body: dict[str, Any], max_bytes: int = 16384) -> Envelope:
    env = decode(body)
    check_envelope(env, len(msgspec.json.encode(env)), max_bytes)
    return env


def test_an_envelope_round_trips_unchanged() -> None:
    body = envelope()
    env = checked(body)
    assert msgspec.json.decode(msgspec.json.encode(env)) == body
    # optional fields left out stay out (no nulls added on the way through)
    bare = envelope(recipients=[{"email": B, "keyId": "k"}])
    del bare["nonce"]
    assert msgspec.json.decode(msgspec.json.encode(checked(bare))) == bare


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"ciphertext": ""}, "ciphertext"),
        ({"ciphertext": "not base64!"}, "ciphertext"),
        ({"ciphertext": "SGVsbG8=="}, "ciphertext"),  # padding is not the spelling
        ({"nonce": "a+b/"}, "nonce"),  # base64, not base64url
        ({"senderKeyId": "bad id"}, "senderKeyId"),
        ({"alg": ""}, "alg"),
        ({"recipients": []}, "recipients"),
        ({"recipients": [{"email": B, "keyId": f"k{i}"} for i in range(21)]}, "recipients"),
        ({"recipients": [{"email": B}]}, "keyId"),
        ({"plaintext": "hello"}, "plaintext"),  # unknown fields are refused
        ({"recipients": [{"email": B, "keyId": "k", "extra": 1}]}, "extra"),
    ],
)
def test_the_schema_refuses_what_is_not_an_envelope(override: dict[str, Any], field: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=field):
        decode(envelope(**override))


def test_key_ids_follow_the_registry() -> None:
    assert keys.KEY_ID_PATTERN == ENVELOPE_KEY_ID_PATTERN
    assert ENVELOPE_MAX_RECIPIENTS == 2 * 10  # MAX_KEYS_PER_USER devices of each participant


@pytest.mark.parametrize(
    ("text", "ok"),
    [("", True), ("QQ", True), ("QR", False), ("QUI", True), ("QUJ", False), ("Q", False)],
)
def test_base64url_must_be_canonical(text: str, ok: bool) -> None:
    assert (b64url.decode(text) is not None) is ok


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"ciphertext": "QR"}, "encrypted.ciphertext"),
        ({"nonce": "Q"}, "encrypted.nonce"),
        ({"recipients": [{"email": B, "keyId": "k", "wrappedKey": "QUJ"}]}, "wrappedKey"),
    ],
)
def test_stray_bits_are_refused(override: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        checked(envelope(**override))
    assert caught.value.code == "ENVELOPE_INVALID"
    assert field in (caught.value.field or "")


def test_a_device_named_twice_is_refused() -> None:
    twice = [{"email": B, "keyId": "k"}, {"email": "BOB@example.com", "keyId": "k"}]
    with pytest.raises(InvalidInput) as caught:
        checked(envelope(recipients=twice))
    assert (caught.value.code, caught.value.field) == ("ENVELOPE_INVALID", "encrypted.recipients")


def test_the_size_limit_counts_the_envelope_as_stored() -> None:
    env = decode(envelope(ciphertext="A" * 4000))
    size = len(msgspec.json.encode(env))
    check_envelope(env, size, size)  # the limit itself is allowed
    with pytest.raises(ContentTooLarge) as caught:
        check_envelope(env, size, size - 1)
    assert (caught.value.code, caught.value.field) == ("ENCRYPTED_TOO_LARGE", "encrypted")


def test_recipients_must_be_participants() -> None:
    env = checked(envelope())
    check_recipients(env, [A, B])
    check_recipients(env, ["ALICE@example.com", "bob@example.com "])
    with pytest.raises(InvalidInput) as caught:
        check_recipients(env, [A, "carol@example.com"])
    assert caught.value.code == "RECIPIENT_NOT_PARTICIPANT"


def test_a_message_is_text_or_an_envelope() -> None:
    env = checked(envelope())
    assert check_body("hi", None) == "content"
    assert check_body(None, env) == "encrypted"
    with pytest.raises(InvalidInput) as neither:
        check_body(None, None)
    assert (neither.value.code, neither.value.field) == ("CONTENT_OR_ENCRYPTED", "content")
    with pytest.raises(InvalidInput) as both:
        check_body("hi", env)
    assert (both.value.code, both.value.field) == ("CONTENT_OR_ENCRYPTED", "encrypted")


def test_send_and_edit_bodies_take_either() -> None:
    sid, cid = uuid.uuid4(), uuid.uuid4()
    raw = {"sessionId": str(sid), "clientMessageId": str(cid), "encrypted": envelope()}
    request = msgspec.json.decode(msgspec.json.encode(raw), type=SendMessageRequest)
    assert request.content is None
    assert request.encrypted == decode(envelope())
    # what the edge forwards is what it was sent: no "content": null added
    assert msgspec.json.decode(msgspec.json.encode(request)) == raw
    edit = msgspec.json.decode(
        msgspec.json.encode({"clientMessageId": str(cid), "encrypted": envelope()}),
        type=EditMessageRequest,
    )
    assert edit.content is None
    assert edit.encrypted is not None


def test_the_flood_rule_sees_only_identical_envelopes() -> None:
    one = msgspec.json.encode(checked(envelope()))
    other = msgspec.json.encode(checked(envelope(nonce="DAsKCQgHBgUEAwIB")))
    assert envelope_fingerprint(one) == envelope_fingerprint(one)
    assert envelope_fingerprint(one) != envelope_fingerprint(other)
    assert envelope_fingerprint(one).startswith("e:")  # never equal to a text's fingerprint


NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
WINDOW = dt.timedelta(minutes=15)


@pytest.mark.parametrize(("message", "edit"), [(True, False), (False, True)])
def test_an_edit_keeps_the_message_plain_or_encrypted(message: bool, edit: bool) -> None:
    target = Target(A, NOW, deleted=False, encrypted=message)
    with pytest.raises(Conflict) as caught:
        check_change("edit", target, A, NOW, WINDOW, encrypted=edit)
    assert caught.value.code == "ENCRYPTION_MISMATCH"
    check_change("edit", target, A, NOW, WINDOW, encrypted=message)
    check_change("delete", target, A, NOW, WINDOW)  # a delete is neither


def test_the_event_template_finds_the_seq_before_the_envelope() -> None:
    """The seq placeholder is found where the seq is, whatever the envelope holds."""
    tricky = envelope(ciphertext="LCJzZXEiOjAs")  # base64 of ',"seq":0,'
    member = Member(uuid.uuid4(), "dating", uuid.uuid4(), A, "Alice", 0, 0)
    view = MessageView(
        message_id=uuid.uuid4(),
        session_id=member.session_id,
        seq=0,
        sender_id=member.profile_id,
        sender_display_name="Alice",
        sender_email=A,
        content="",
        client_message_id=uuid.uuid4(),
        sent_at=NOW,
        encrypted=decode(tricky),
    )
    template = message_event_template(view, [member])
    payload = template.before_seq + b"7" + template.after_seq
    decoded = msgspec.json.decode(payload, type=MessageView)
    assert decoded.seq == 7
    assert decoded.encrypted == decode(tricky)


def test_the_largest_text_for_every_device_fits_the_default_limit_and_a_stomp_body() -> None:
    """A text at MAX_CONTENT_BYTES encrypted (AES-GCM: + 16 bytes) for 20 devices, each with a
    wrapped key of 80 bytes (an X25519 public key and a sealed 32-byte key), under the default
    ENCRYPTED_MAX_BYTES; and the SEND carrying it under ws-edge's MAX_BODY_BYTES."""
    from message_svc.settings import Settings

    limit = Settings.__struct_defaults__[Settings.__struct_fields__.index("encrypted_max_bytes")]
    recipients = [
        {
            "email": f"someone.with.a.long.name{i:02}@example.com",
            "keyId": f"{i:02}" + "k" * 30,
            "wrappedKey": "A" * 107,  # 80 bytes
        }
        for i in range(ENVELOPE_MAX_RECIPIENTS)
    ]
    ciphertext = "A" * ((4096 + 16) * 4 // 3 + 1)
    env = checked(envelope(recipients=recipients, ciphertext=ciphertext), max_bytes=limit)
    send = SendMessageRequest(
        session_id=uuid.uuid4(), client_message_id=uuid.uuid4(), encrypted=env
    )
    assert len(msgspec.json.encode(send)) < 16 * 1024
