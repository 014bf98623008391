"""Stored rows as the wire sees them (pure): a message in its current state, a change, a
session in the caller's list."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
import msgspec

from chat_common.dto import (
    CLOSED,
    OPEN,
    Envelope,
    LastMessage,
    MessageChange,
    MessageView,
    Participant,
    SessionSummary,
)

from .domain import blockers
from .repository import Member

# A stored message as the repository returns it (a record, or a plain mapping).
Row = asyncpg.Record | Mapping[str, Any]


_ENVELOPE = msgspec.json.Decoder(Envelope)


def stored_envelope(value: bytes | None) -> Envelope | None:
    """An envelope as stored (the JSON it was received as, re-encoded once)."""
    return None if value is None else _ENVELOPE.decode(value)


def message_view(row: Row, recipient: Member | None) -> MessageView:
    """A stored message in its current state (a tombstone's content is empty)."""
    seq = int(row["seq"])
    deleted_at = row["deleted_at"]
    return MessageView(
        message_id=row["id"],
        session_id=row["session_id"],
        seq=seq,
        sender_id=row["sender_profile_id"],
        sender_display_name=row["sender_display_name"],
        sender_email=row["sender_email"],
        content=row["content"] or "",
        client_message_id=row["client_msg_id"],
        sent_at=row["sent_at"],
        delivered=recipient is not None and seq <= recipient.delivered_seq,
        seen=recipient is not None and seq <= recipient.read_seq,
        edited_at=row["edited_at"],
        deleted=deleted_at is not None,
        deleted_at=deleted_at,
        encrypted=stored_envelope(row["encrypted"]),
    )


def change_view(row: Row) -> MessageChange:
    """A stored change (:func:`repository.find_change`'s row)."""
    return MessageChange(
        change=row["kind"],
        session_id=row["session_id"],
        seq=int(row["seq"]),
        message_id=row["message_id"],
        message_seq=int(row["message_seq"]),
        sender_id=row["sender_profile_id"],
        sender_email=row["sender_email"],
        content=row["content"] or "",
        client_message_id=row["client_msg_id"],
        changed_at=row["changed_at"],
        encrypted=stored_envelope(row["encrypted"]),
    )


def event_change_view(row: Row) -> MessageChange:
    """An edit or delete among a session's events (:func:`repository.events`' rows whose
    ``is_change`` is true: the change's place in ``place``, its message's in ``seq``)."""
    return MessageChange(
        change=row["kind"],
        session_id=row["session_id"],
        seq=int(row["place"]),
        message_id=row["id"],
        message_seq=int(row["seq"]),
        sender_id=row["sender_profile_id"],
        sender_email=row["sender_email"],
        content=row["change_content"] or "",
        client_message_id=row["change_client_msg_id"],
        changed_at=row["changed_at"],
        encrypted=stored_envelope(row["change_encrypted"]),
    )


def session_summary(row: Row) -> SessionSummary:
    """A session in the caller's list (:func:`repository.sessions_of`' row): both sides, the
    last message, the unread count, who blocks, whether it is closed."""
    return SessionSummary(
        session_id=row["session_id"],
        intent=row["intent"],
        me=Participant(
            profile_id=row["me_profile_id"],
            display_name=row["me_display_name"],
            email=row["me_email"],
        ),
        peer=Participant(
            profile_id=row["peer_profile_id"],
            display_name=row["peer_display_name"],
            email=row["peer_email"],
        ),
        last_message=None
        if row["last_id"] is None
        else LastMessage(
            message_id=row["last_id"],
            seq=row["last_seq"],
            sender_email=row["last_sender"],
            content=row["last_content"] or "",
            sent_at=row["last_sent_at"],
            edited_at=row["last_edited_at"],
            deleted=row["last_deleted_at"] is not None,
            encrypted=bool(row["last_encrypted"]),
        ),
        unread_count=int(row["unread_count"]),
        created_at=row["created_at"],
        blocked_by=blockers(
            [
                (row["me_email"], row["me_blocked_at"]),
                (row["peer_email"], row["peer_blocked_at"]),
            ]
        ),
        state=OPEN if row["closed_reason"] is None else CLOSED,
        closed_reason=row["closed_reason"],
    )
