"""Pure rules: content, marks, and who may edit or delete a message when."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest

from chat_common.errors import Conflict, ContentTooLarge, Forbidden, InvalidInput, NotFound
from message_svc.domain import (
    PriorChange,
    Target,
    blockers,
    check_change,
    check_content,
    check_open,
    check_replay,
    next_mark,
    refusal,
)


@pytest.mark.parametrize("content", ["", "   ", "\n\t "])
def test_blank_content_is_refused(content: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_content(content, 4096)
    assert caught.value.field == "content"


def test_size_is_counted_in_encoded_bytes() -> None:
    check_content("é" * 2048, 4096)  # 4096 bytes
    with pytest.raises(ContentTooLarge):
        check_content("é" * 2049, 4096)


def test_lone_surrogates_and_nul_are_refused() -> None:
    with pytest.raises(InvalidInput):
        check_content("a\ud800b", 4096)
    with pytest.raises(InvalidInput):
        check_content("a\x00b", 4096)


@pytest.mark.parametrize(
    ("current", "requested", "last", "expected"),
    [(0, 5, 10, 5), (5, 3, 10, 5), (5, 50, 10, 10), (0, 0, 0, 0), (7, 9, 7, 7)],
)
def test_marks_never_go_back_nor_past_the_last_seq(
    current: int, requested: int, last: int, expected: int
) -> None:
    assert next_mark(current, requested, last) == expected


NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
WINDOW = dt.timedelta(minutes=15)
MINE = Target("alice@example.com", NOW - dt.timedelta(minutes=1), deleted=False)


@pytest.mark.parametrize("kind", ["edit", "delete"])
def test_the_sender_may_change_a_live_message(kind: str) -> None:
    check_change(kind, MINE, "alice@example.com", NOW, WINDOW)


@pytest.mark.parametrize("kind", ["edit", "delete"])
def test_no_one_else_may_change_it(kind: str) -> None:
    with pytest.raises(Forbidden) as caught:
        check_change(kind, MINE, "bob@example.com", NOW, WINDOW)
    assert caught.value.code == "NOT_MESSAGE_SENDER"


@pytest.mark.parametrize("kind", ["edit", "delete"])
def test_an_unknown_message_is_not_found(kind: str) -> None:
    with pytest.raises(NotFound) as caught:
        check_change(kind, None, "alice@example.com", NOW, WINDOW)
    assert caught.value.code == "MESSAGE_NOT_FOUND"


@pytest.mark.parametrize("kind", ["edit", "delete"])
def test_a_tombstone_cannot_change(kind: str) -> None:
    gone = dataclasses.replace(MINE, deleted=True)
    with pytest.raises(Conflict) as caught:
        check_change(kind, gone, "alice@example.com", NOW, WINDOW)
    assert caught.value.code == "MESSAGE_DELETED"
    with pytest.raises(Forbidden):  # and who asks is checked first
        check_change(kind, gone, "bob@example.com", NOW, WINDOW)


def test_the_edit_window_ends_at_its_end_and_a_delete_has_none() -> None:
    at_the_end = dataclasses.replace(MINE, sent_at=NOW - WINDOW)
    check_change("edit", at_the_end, "alice@example.com", NOW, WINDOW)
    past = dataclasses.replace(MINE, sent_at=NOW - WINDOW - dt.timedelta(microseconds=1))
    with pytest.raises(Conflict) as caught:
        check_change("edit", past, "alice@example.com", NOW, WINDOW)
    assert caught.value.code == "EDIT_WINDOW_CLOSED"
    years = dataclasses.replace(MINE, sent_at=NOW - dt.timedelta(days=3650))
    check_change("delete", years, "alice@example.com", NOW, WINDOW)
    with pytest.raises(Conflict):  # a window of 0: no edits at all
        check_change("edit", MINE, "alice@example.com", NOW, dt.timedelta(0))


def test_a_client_id_repeats_its_own_change_only() -> None:
    session, message = uuid.uuid4(), uuid.uuid4()
    prior = PriorChange("edit", session, message)
    check_replay(prior, "edit", session, message)
    for kind, other_session, other_message in [
        ("delete", session, message),
        ("edit", session, uuid.uuid4()),
        ("edit", uuid.uuid4(), message),
    ]:
        with pytest.raises(Conflict) as caught:
            check_replay(prior, kind, other_session, other_message)
        assert caught.value.code == "CLIENT_MESSAGE_ID_REUSED"
        assert caught.value.field == "clientMessageId"


def test_a_session_either_participant_blocks_refuses_sends() -> None:
    early = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    late = early + dt.timedelta(seconds=1)
    assert blockers([("a@x.io", None), ("b@x.io", None)]) == ()
    assert blockers([("a@x.io", late), ("b@x.io", early)]) == ("b@x.io", "a@x.io")
    check_open(False)
    with pytest.raises(Forbidden) as refused:
        check_open(True)
    assert refused.value.code == "SESSION_BLOCKED"


def test_a_closed_session_refuses_sends_before_any_block() -> None:
    assert refusal(False) is None
    closed = refusal(True, "PARTICIPANT_DELETED")
    assert closed is not None
    assert closed.code == "SESSION_CLOSED"
    assert "PARTICIPANT_DELETED" in closed.detail
    with pytest.raises(Forbidden) as refused:
        check_open(False, "PARTICIPANT_DELETED")
    assert refused.value.code == "SESSION_CLOSED"
