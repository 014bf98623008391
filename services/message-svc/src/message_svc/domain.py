"""Pure rules of messages: content and encrypted envelopes, send-rate buckets, the
duplicate-content rule, marks, who may edit or delete a message when, and what a blocked
session refuses."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from chat_common import b64url
from chat_common.dto import Envelope
from chat_common.errors import Conflict, ContentTooLarge, Forbidden, InvalidInput, NotFound


def check_content(content: str, max_bytes: int) -> None:
    """UTF-8 text, not blank once trimmed, at most ``max_bytes`` encoded."""
    if not content.strip():
        raise InvalidInput("content must not be blank", code="CONTENT_BLANK", field="content")
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(
            "content is not valid UTF-8 text", code="CONTENT_INVALID", field="content"
        ) from None
    if size > max_bytes:
        raise ContentTooLarge(f"content is {size} bytes; the limit is {max_bytes}", field="content")
    if "\x00" in content:
        raise InvalidInput("content must not contain NUL", code="CONTENT_INVALID", field="content")


def content_fingerprint(content: str) -> str:
    return hashlib.sha256(content.strip().encode("utf-8")).hexdigest()[:32]


def envelope_fingerprint(encoded: bytes) -> str:
    """What the duplicate rule counts for an encrypted message: its envelope as stored. A
    fresh encryption never repeats (a new nonce and content key), so only a replay of the
    same envelope under new client ids is counted: the server cannot see equal texts."""
    return "e:" + hashlib.sha256(encoded).hexdigest()[:30]


def check_body(content: str | None, encrypted: Envelope | None) -> str:
    """A message (or an edit) is text or an envelope, exactly one: which field it uses."""
    if content is None and encrypted is None:
        raise InvalidInput(
            "a message needs content or encrypted", code="CONTENT_OR_ENCRYPTED", field="content"
        )
    if content is not None and encrypted is not None:
        raise InvalidInput(
            "a message has content or encrypted, not both",
            code="CONTENT_OR_ENCRYPTED",
            field="encrypted",
        )
    return "content" if content is not None else "encrypted"


def check_envelope(envelope: Envelope, encoded_size: int, max_bytes: int) -> None:
    """The envelope's shape and size, never its content: its binary fields canonical
    base64url, each device once, and the envelope as stored (``encoded_size``, its JSON) at
    most ``max_bytes`` (413 ``ENCRYPTED_TOO_LARGE``)."""
    if encoded_size > max_bytes:
        raise ContentTooLarge(
            f"the encrypted envelope is {encoded_size} bytes; the limit is {max_bytes}",
            code="ENCRYPTED_TOO_LARGE",
            field="encrypted",
        )
    fields = [("encrypted.ciphertext", envelope.ciphertext)]
    if envelope.nonce is not None:
        fields.append(("encrypted.nonce", envelope.nonce))
    fields += [
        ("encrypted.recipients.wrappedKey", r.wrapped_key)
        for r in envelope.recipients
        if r.wrapped_key is not None
    ]
    for name, value in fields:
        if b64url.decode(value) is None:
            raise InvalidInput(
                f"{name} is not canonical base64url without padding",
                code="ENVELOPE_INVALID",
                field=name,
            )
    devices = {(r.email.strip().lower(), r.key_id) for r in envelope.recipients}
    if len(devices) != len(envelope.recipients):
        raise InvalidInput(
            "a device is named twice in recipients",
            code="ENVELOPE_INVALID",
            field="encrypted.recipients",
        )


def check_recipients(envelope: Envelope, participants: Iterable[str]) -> None:
    """Every recipient is a participant of the session (by email; 422
    ``RECIPIENT_NOT_PARTICIPANT``): a message is never addressed to a third party's keys.
    Whether a keyId is a current key is the clients' to check (docs/threat-model.md)."""
    allowed = {p.strip().lower() for p in participants}
    for r in envelope.recipients:
        if r.email.strip().lower() not in allowed:
            raise InvalidInput(
                "a recipient of the envelope is not a participant of the session",
                code="RECIPIENT_NOT_PARTICIPANT",
                field="encrypted.recipients",
            )


def next_mark(current: int, requested: int, last_seq: int) -> int:
    """A read/delivered mark never moves backwards and never passes the last message."""
    return max(current, min(requested, last_seq))


def session_cursor(activity: dt.datetime, session_id: uuid.UUID) -> str:
    """The ``before`` cursor after a session of a session-list page: opaque to clients."""
    raw = f"{activity.isoformat()}|{session_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_session_cursor(text: str) -> tuple[dt.datetime, uuid.UUID]:
    """The (activity, session id) a cursor names; :class:`InvalidInput` for anything else."""
    try:
        if len(text) > 200:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        when, _, sid = raw.partition("|")
        activity = dt.datetime.fromisoformat(when)
        if activity.tzinfo is None:
            raise ValueError("no time zone")
        return activity, uuid.UUID(sid)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("before is not a cursor this API gave", field="before") from None


@dataclass(frozen=True, slots=True)
class Target:
    """What the change rules need of the message a change names."""

    sender_email: str
    sent_at: dt.datetime
    deleted: bool
    encrypted: bool = False


@dataclass(frozen=True, slots=True)
class PriorChange:
    """A change the user already made with the client id of a new request."""

    kind: str
    session_id: uuid.UUID
    message_id: uuid.UUID


def check_change(
    kind: str,
    target: Target | None,
    user_email: str,
    now: dt.datetime,
    edit_window: dt.timedelta,
    *,
    encrypted: bool = False,
) -> None:
    """Whether ``user_email`` may make this change now: the message exists in the session
    (404 ``MESSAGE_NOT_FOUND``), the user sent it (403 ``NOT_MESSAGE_SENDER``), it is not
    deleted (409 ``MESSAGE_DELETED``), an edit comes within ``edit_window`` of the
    message's ``sentAt`` (409 ``EDIT_WINDOW_CLOSED``; the window's end is still inside), and
    an edit is encrypted (``encrypted``) if and only if the message is (409
    ``ENCRYPTION_MISMATCH``: an edit never turns a ciphertext into text or back)."""
    if kind not in ("edit", "delete"):
        raise ValueError(kind)
    if target is None:
        raise NotFound("no such message in this session", code="MESSAGE_NOT_FOUND")
    if target.sender_email != user_email:
        raise Forbidden(
            "only the sender of a message may edit or delete it", code="NOT_MESSAGE_SENDER"
        )
    if target.deleted:
        raise Conflict("the message was deleted", code="MESSAGE_DELETED")
    if kind == "edit" and now - target.sent_at > edit_window:
        window = int(edit_window.total_seconds())
        raise Conflict(
            f"a message can be edited for {window} s after it was sent",
            code="EDIT_WINDOW_CLOSED",
        )
    if kind == "edit" and target.encrypted != encrypted:
        state = "encrypted" if target.encrypted else "not encrypted"
        raise Conflict(
            f"the message is {state}; an edit must be too",
            code="ENCRYPTION_MISMATCH",
            field="encrypted" if target.encrypted else "content",
        )


def check_replay(
    prior: PriorChange, kind: str, session_id: uuid.UUID, message_id: uuid.UUID
) -> None:
    """A request with the client id of ``prior`` must repeat it (the same change of the same
    message: answered as before, nothing written); 409 ``CLIENT_MESSAGE_ID_REUSED`` when the
    client id named another change."""
    if (prior.kind, prior.session_id, prior.message_id) != (kind, session_id, message_id):
        raise Conflict(
            "this clientMessageId was already used for another change",
            code="CLIENT_MESSAGE_ID_REUSED",
            field="clientMessageId",
        )


def blockers(blocked_at: Iterable[tuple[str, dt.datetime | None]]) -> tuple[str, ...]:
    """The participants who block a session, earliest block first, from each participant's
    (email, blocked_at)."""
    blocking = sorted((at, email) for email, at in blocked_at if at is not None)
    return tuple(email for _, email in blocking)


def refusal(blocked: bool, closed_reason: str | None = None) -> Forbidden | None:
    """Why nothing may be sent, edited or deleted in a session: it is closed for good
    (``SESSION_CLOSED``, a participant's account was deleted), or either participant blocks it
    (both sides are refused alike, and the refusal does not say who blocked); None while it is
    open."""
    if closed_reason is not None:
        return session_closed(closed_reason)
    if blocked:
        return session_blocked()
    return None


def check_open(blocked: bool, closed_reason: str | None = None) -> None:
    """Raise :func:`refusal`'s answer, if any."""
    refused = refusal(blocked, closed_reason)
    if refused is not None:
        raise refused


def session_closed(reason: str) -> Forbidden:
    return Forbidden(
        f"this session is closed ({reason}: the other participant's account was deleted):"
        " nothing can be sent in it",
        code="SESSION_CLOSED",
    )


def session_blocked() -> Forbidden:
    return Forbidden("this session is blocked: nothing can be sent in it", code="SESSION_BLOCKED")
