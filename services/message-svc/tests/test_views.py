"""Stored rows as the wire sees them: a message in its current state, a change."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec

from chat_common.dto import Envelope
from message_svc.repository import Member
from message_svc.views import change_view, event_change_view, message_view, session_summary

SESSION = uuid.uuid4()
SENT = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
ENVELOPE = {
    "alg": "ECDH-P256-HKDF-SHA256+A256GCM",
    "senderKeyId": "phone",
    "recipients": [{"email": "bob@example.com", "keyId": "laptop", "wrappedKey": "a2V5"}],
    "ciphertext": "c2VjcmV0",
    "nonce": "AAAAAAAAAAAAAAAA",
}


def row(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "session_id": SESSION,
        "seq": 3,
        "sender_profile_id": uuid.uuid4(),
        "sender_display_name": "Alice",
        "sender_email": "alice@example.com",
        "content": "hello",
        "client_msg_id": uuid.uuid4(),
        "sent_at": SENT,
        "edited_at": None,
        "deleted_at": None,
        "encrypted": None,
    }
    fields.update(changes)
    return fields


def reader(read: int, delivered: int) -> Member:
    return Member(SESSION, "dating", uuid.uuid4(), "bob@example.com", "Bob", read, delivered)


def test_marks_are_the_recipients_and_none_without_one() -> None:
    view = message_view(row(seq=3), reader(read=2, delivered=3))
    assert (view.seq, view.content, view.delivered, view.seen) == (3, "hello", True, False)
    assert message_view(row(seq=3), reader(read=3, delivered=3)).seen
    alone = message_view(row(seq=3), None)
    assert (alone.delivered, alone.seen) == (False, False)


def test_an_edit_and_a_tombstone() -> None:
    edited_at = SENT + dt.timedelta(minutes=1)
    edited = message_view(row(content="hello again", edited_at=edited_at), None)
    assert (edited.content, edited.edited_at, edited.deleted) == ("hello again", edited_at, False)
    gone = message_view(row(content=None, deleted_at=edited_at), None)
    assert (gone.content, gone.deleted, gone.deleted_at) == ("", True, edited_at)


def test_a_stored_envelope_is_decoded_as_received() -> None:
    stored = msgspec.json.encode(ENVELOPE)
    view = message_view(row(content=None, encrypted=stored), None)
    assert isinstance(view.encrypted, Envelope)
    assert msgspec.json.decode(msgspec.json.encode(view.encrypted)) == ENVELOPE
    assert view.content == ""


def test_a_change() -> None:
    message_id = uuid.uuid4()
    change = change_view(
        row(
            kind="delete",
            seq=7,
            message_id=message_id,
            message_seq=3,
            content=None,
            changed_at=SENT,
        )
    )
    assert (change.change, change.seq, change.message_id, change.message_seq) == (
        "delete",
        7,
        message_id,
        3,
    )
    assert (change.content, change.encrypted, change.changed_at) == ("", None, SENT)


def test_a_change_among_the_sessions_events() -> None:
    """An events row: the change's place, its text and envelope in their own columns, next to
    the changed message's (its seq and current content)."""
    stored = msgspec.json.encode(ENVELOPE)
    client_id = uuid.uuid4()
    event = row(
        seq=3,
        content="hello again",
        place=9,
        is_change=True,
        kind="edit",
        change_content="",
        change_encrypted=stored,
        change_client_msg_id=client_id,
        changed_at=SENT,
    )
    change = event_change_view(event)
    assert (change.change, change.seq, change.message_id, change.message_seq) == (
        "edit",
        9,
        event["id"],
        3,
    )
    assert (change.client_message_id, change.content) == (client_id, "")
    assert change.encrypted is not None
    assert msgspec.json.decode(msgspec.json.encode(change.encrypted)) == ENVELOPE


def listed(**changes: Any) -> dict[str, Any]:
    """A row of the caller's session list: Alice's, with Bob, nothing sent yet."""
    fields: dict[str, Any] = {
        "session_id": SESSION,
        "intent": "dating",
        "me_profile_id": uuid.uuid4(),
        "me_display_name": "Alice",
        "me_email": "alice@example.com",
        "me_blocked_at": None,
        "peer_profile_id": uuid.uuid4(),
        "peer_display_name": "Bob",
        "peer_email": "bob@example.com",
        "peer_blocked_at": None,
        "last_id": None,
        "unread_count": 0,
        "created_at": SENT,
        "closed_reason": None,
    }
    fields.update(changes)
    return fields


def test_a_new_open_session_in_the_list() -> None:
    summary = session_summary(listed())
    assert (summary.me.email, summary.peer.display_name) == ("alice@example.com", "Bob")
    assert summary.last_message is None
    assert (summary.state, summary.closed_reason, summary.blocked_by) == ("OPEN", None, ())


def test_the_last_message_blocks_and_the_close_in_the_list() -> None:
    last_id = uuid.uuid4()
    summary = session_summary(
        listed(
            last_id=last_id,
            last_seq=4,
            last_sender="bob@example.com",
            last_content=None,
            last_sent_at=SENT,
            last_edited_at=None,
            last_deleted_at=SENT,
            last_encrypted=False,
            unread_count=2,
            me_blocked_at=SENT + dt.timedelta(minutes=2),
            peer_blocked_at=SENT + dt.timedelta(minutes=1),
            closed_reason="PARTICIPANT_DELETED",
        )
    )
    last = summary.last_message
    assert last is not None
    assert (last.message_id, last.seq, last.content, last.deleted) == (last_id, 4, "", True)
    assert summary.unread_count == 2
    assert summary.blocked_by == ("bob@example.com", "alice@example.com")  # earliest first
    assert (summary.state, summary.closed_reason) == ("CLOSED", "PARTICIPANT_DELETED")
