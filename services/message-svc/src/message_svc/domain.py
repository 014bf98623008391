"""Pure rules of messages: content, send-rate buckets, the duplicate-content rule, marks."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import uuid

from chat_common.errors import ContentTooLarge, InvalidInput


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
