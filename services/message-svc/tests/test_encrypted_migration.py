"""Migration 0006 (encrypted messages) on a database of its own: applied, rolled back (an
encrypted message becomes a tombstone: the server never had its text) and applied again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from chat_migrations import apply
from chat_testing.scratch import roll_back, scratch_database

pytestmark = pytest.mark.integration

MIGRATION = "0006.encrypted-messages"


@pytest.fixture
def scratch_url() -> Iterator[str]:
    with scratch_database("envelope_migration") as url:
        yield url


def has_column(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'chat_messages' AND column_name = 'encrypted'"
        ).fetchone()
        return bool(row and row[0])


def insert_messages(url: str) -> None:
    """A session with a text message and an encrypted one, edited once."""
    sid, encrypted = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(url) as conn:
        low, high = sorted([uuid.uuid4(), uuid.uuid4()])
        conn.execute(
            "INSERT INTO chat_sessions (id, intent, profile_lo, profile_hi, last_seq)"
            " VALUES (%s, 'dating', %s, %s, 3)",
            (sid, low, high),
        )
        for seq, mid, content, envelope in [
            (1, uuid.uuid4(), "hello", None),
            (2, encrypted, None, b'{"ciphertext":"AA"}'),
        ]:
            conn.execute(
                "INSERT INTO chat_messages (id, session_id, seq, sender_profile_id,"
                " sender_email, sender_display_name, content, client_msg_id, encrypted)"
                " VALUES (%s, %s, %s, %s, 'a@example.com', 'A', %s, %s, %s)",
                (mid, sid, seq, uuid.uuid4(), content, uuid.uuid4(), envelope),
            )
        conn.execute(
            "INSERT INTO chat_message_changes (session_id, seq, message_id, kind, sender_email,"
            " client_msg_id, encrypted) VALUES (%s, 3, %s, 'edit', 'a@example.com', %s, %s)",
            (sid, encrypted, uuid.uuid4(), b'{"ciphertext":"AQ"}'),
        )


def test_applied_rolled_back_and_applied_again(scratch_url: str) -> None:
    assert MIGRATION in apply(scratch_url)
    assert has_column(scratch_url)
    insert_messages(scratch_url)
    roll_back(scratch_url, MIGRATION)
    assert not has_column(scratch_url)
    with psycopg.connect(scratch_url) as conn:
        rows = conn.execute(
            "SELECT seq, content, deleted_at IS NOT NULL FROM chat_messages ORDER BY seq"
        ).fetchall()
    assert rows == [(1, "hello", False), (2, None, True)]
    assert apply(scratch_url) == [MIGRATION]
    assert has_column(scratch_url)
