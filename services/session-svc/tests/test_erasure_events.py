"""The erasure's outbox entries (pure): who they are routed to, and that neither names the
deleted user."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from chat_common import routing
from session_svc.erasure import closed_event, user_deleted_event

ALICE, BOB = "alice@example.com", "bob@example.com"


def test_the_closed_event_goes_to_the_session_and_the_peer_only() -> None:
    session = uuid.uuid4()
    at = dt.datetime(2026, 1, 2, 10, 0, tzinfo=dt.UTC)
    entry = closed_event(session, BOB, at)
    assert (entry.session_id, entry.routing_key, entry.event_type) == (
        session,
        routing.session_key(session),
        "closed",
    )
    assert entry.headers["CC"] == [routing.user_key(BOB)]
    assert entry.headers["x-event"] == "closed"
    assert json.loads(entry.payload) == {
        "sessionId": str(session),
        "state": "CLOSED",
        "reason": "PARTICIPANT_DELETED",
        "closedAt": "2026-01-02T10:00:00Z",
    }


def test_the_user_deleted_event_is_routed_by_the_user_key_and_carries_no_email() -> None:
    entry = user_deleted_event(ALICE)
    assert (entry.session_id, entry.routing_key, entry.event_type) == (
        None,
        routing.user_key(ALICE),
        "user-deleted",
    )
    assert "CC" not in entry.headers
    assert ALICE not in entry.payload.decode() + json.dumps(dict(entry.headers))
    assert json.loads(entry.payload)["code"] == "USER_DELETED"
