"""A session's participant rows read as rules: caller and peer, blocked, closed."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from chat_common.errors import Forbidden, NotFound
from message_svc.members import any_blocked, caller_and_peer, closed_reason
from message_svc.repository import Member

SESSION = uuid.uuid4()


def member(email: str, **changes: object) -> Member:
    fields: dict[str, object] = {
        "session_id": SESSION,
        "intent": "dating",
        "profile_id": uuid.uuid4(),
        "user_email": email,
        "display_name": email.split("@")[0],
        "read_seq": 0,
        "delivered_seq": 0,
    }
    fields.update(changes)
    return Member(**fields)  # type: ignore[arg-type]


def test_the_caller_and_the_peer_whichever_row_comes_first() -> None:
    alice, bob = member("alice@example.com"), member("bob@example.com")
    assert caller_and_peer([alice, bob], "alice@example.com") == (alice, bob)
    assert caller_and_peer([alice, bob], "bob@example.com") == (bob, alice)


def test_an_unknown_session_is_404_and_a_stranger_403() -> None:
    with pytest.raises(NotFound) as unknown:
        caller_and_peer([], "alice@example.com")
    assert unknown.value.code == "SESSION_NOT_FOUND"
    pair = [member("alice@example.com"), member("bob@example.com")]
    with pytest.raises(Forbidden) as stranger:
        caller_and_peer(pair, "eve@example.com")
    assert stranger.value.code == "NOT_PARTICIPANT"


def test_blocked_when_either_side_blocks() -> None:
    now = dt.datetime.now(dt.UTC)
    alice, bob = member("alice@example.com"), member("bob@example.com")
    assert not any_blocked([alice, bob])
    assert any_blocked([alice, member("bob@example.com", blocked_at=now)])
    assert any_blocked([member("alice@example.com", blocked_at=now), bob])


def test_closed_names_the_reason_of_whichever_row_carries_it() -> None:
    alice, bob = member("alice@example.com"), member("bob@example.com")
    assert closed_reason([alice, bob]) is None
    gone = member("bob@example.com", closed_reason="PARTICIPANT_DELETED")
    assert closed_reason([alice, gone]) == "PARTICIPANT_DELETED"
    assert closed_reason([gone, alice]) == "PARTICIPANT_DELETED"
