"""Encrypted messages on the real PostgreSQL: an envelope stored and answered unchanged by
send, history, the session's events, unread and the outbox; the session list's marker; edits
with a new envelope, deletes that erase it; the refusals; the duplicate rule on envelopes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from .conftest import ChatSession, SessionFactory, serving

Headers = Callable[[str], dict[str, str]]


def envelope(session: ChatSession, ciphertext: str = "c2VjcmV0IGJ5dGVz") -> dict[str, Any]:
    return {
        "alg": "X25519-HKDF-SHA256+A256GCM",
        "senderKeyId": "a-laptop",
        "nonce": "AAECAwQFBgcICQoL",
        "recipients": [
            {"email": session.b, "keyId": "b-phone", "wrappedKey": "q83vEjRWeJA"},
            {"email": session.a, "keyId": "a-laptop", "wrappedKey": "ESIzRFVmd4g"},
        ],
        "ciphertext": ciphertext,
    }


def body(session: ChatSession, **fields: Any) -> dict[str, Any]:
    return {"sessionId": str(session.id), "clientMessageId": str(uuid.uuid4()), **fields}


async def send_encrypted(
    client: httpx.AsyncClient, session: ChatSession, headers: dict[str, str], env: dict[str, Any]
) -> dict[str, Any]:
    answer = await client.post(
        "/api/chat/message", json=body(session, encrypted=env), headers=headers
    )
    assert answer.status_code == 200, answer.text
    message: dict[str, Any] = answer.json()
    return message


def refused(answer: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    problem = answer.json()
    assert problem["code"] == code, answer.text
    if field is not None:
        assert problem.get("field") == field, answer.text


async def test_an_envelope_is_stored_and_answered_unchanged(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    env = envelope(session)
    message = await send_encrypted(client, session, as_user(session.a), env)
    assert message["encrypted"] == env
    assert message["content"] == ""
    row = await db_pool.fetchrow(
        "SELECT content, encrypted FROM chat_messages WHERE id = $1",
        uuid.UUID(message["messageId"]),
    )
    assert row is not None
    assert row["content"] is None
    assert json.loads(row["encrypted"]) == env
    # the event as published carries the same envelope
    outbox = await db_pool.fetchrow("SELECT payload FROM chat_message_outbox")
    assert outbox is not None
    assert json.loads(outbox["payload"])["encrypted"] == env
    # history, events and unread, for the peer
    peer = as_user(session.b)
    history = (await client.get(f"/api/chat/{session.id}/history", headers=peer)).json()
    assert [m["encrypted"] for m in history["messages"]] == [env]
    events = (await client.get(f"/api/chat/{session.id}/events?after=0", headers=peer)).json()
    assert [e["message"]["encrypted"] for e in events["events"]] == [env]
    unread = (await client.get(f"/api/chat/{session.id}/unread", headers=peer)).json()
    assert unread["count"] == 1
    assert unread["messages"][0]["encrypted"] == env
    # the session list marks it, without the ciphertext
    listed = (await client.get("/api/chat/sessions", headers=peer)).json()["sessions"][0]
    assert listed["unreadCount"] == 1
    assert listed["lastMessage"]["encrypted"] is True
    assert listed["lastMessage"]["content"] == ""
    assert "ciphertext" not in json.dumps(listed)
    # a text message has no envelope
    plain = await client.post(
        "/api/chat/message", json=body(session, content="hi"), headers=as_user(session.a)
    )
    assert plain.json()["encrypted"] is None


async def test_a_retry_answers_the_stored_envelope(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    request = body(session, encrypted=envelope(session))
    first = await client.post("/api/chat/message", json=request, headers=as_user(session.a))
    again = await client.post("/api/chat/message", json=request, headers=as_user(session.a))
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["messageId"] == first.json()["messageId"]
    assert again.json()["encrypted"] == request["encrypted"]
    assert await db_pool.fetchval("SELECT count(*) FROM chat_messages") == 1


async def test_refusals_store_nothing(
    settings_factory: Any, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    headers = as_user(session.a)
    env = envelope(session)
    async with serving(settings_factory(encrypted_max_bytes=1024)) as served:
        post = served.client.post

        both = await post(
            "/api/chat/message", json=body(session, content="x", encrypted=env), headers=headers
        )
        refused(both, 422, "CONTENT_OR_ENCRYPTED", "encrypted")
        neither = await post("/api/chat/message", json=body(session), headers=headers)
        refused(neither, 422, "CONTENT_OR_ENCRYPTED", "content")
        big = await post(
            "/api/chat/message",
            json=body(session, encrypted=envelope(session, "A" * 2000)),
            headers=headers,
        )
        refused(big, 413, "ENCRYPTED_TOO_LARGE", "encrypted")
        stray = await post(
            "/api/chat/message",
            json=body(session, encrypted=envelope(session, "QR")),
            headers=headers,
        )
        refused(stray, 422, "ENVELOPE_INVALID", "encrypted.ciphertext")
        stranger = dict(env, recipients=[{"email": "carol@example.com", "keyId": "c"}])
        outsider = await post(
            "/api/chat/message", json=body(session, encrypted=stranger), headers=headers
        )
        refused(outsider, 422, "RECIPIENT_NOT_PARTICIPANT", "encrypted.recipients")
        unknown = dict(env, plaintext="hello")
        schema = await post(
            "/api/chat/message", json=body(session, encrypted=unknown), headers=headers
        )
        assert schema.status_code == 422
        assert "plaintext" in schema.text
        # the shape is checked before membership: a stranger learns nothing more
        other = await new_session("carol@example.com", "dave@example.com")
        not_mine = await post(
            "/api/chat/message", json=body(other, encrypted=envelope(other)), headers=headers
        )
        refused(not_mine, 403, "NOT_PARTICIPANT")
    assert await db_pool.fetchval("SELECT count(*) FROM chat_messages") == 0
    assert await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox") == 0


async def test_the_duplicate_rule_counts_identical_envelopes_only(
    settings_factory: Any, new_session: SessionFactory, as_user: Headers
) -> None:
    session = await new_session()
    headers = as_user(session.a)
    async with serving(settings_factory(duplicate_content_limit=2)) as served:
        same = envelope(session)
        answers = [
            await served.client.post(
                "/api/chat/message", json=body(session, encrypted=same), headers=headers
            )
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].json()["code"] == "DUPLICATE_CONTENT"
        # a fresh encryption (another nonce and ciphertext) of whatever text is another message
        for n in range(3):
            fresh = envelope(session, ciphertext=f"Y2lwaGVy{n}A")
            answer = await served.client.post(
                "/api/chat/message", json=body(session, encrypted=fresh), headers=headers
            )
            assert answer.status_code == 200, answer.text


async def test_edits_carry_a_new_envelope_and_a_delete_erases_it(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    headers = as_user(session.a)
    message = await send_encrypted(client, session, headers, envelope(session))
    url = f"/api/chat/{session.id}/messages/{message['messageId']}"
    new = envelope(session, ciphertext="bmV3IGNpcGhlcg")
    edited = await client.patch(
        url, json={"clientMessageId": str(uuid.uuid4()), "encrypted": new}, headers=headers
    )
    assert edited.status_code == 200, edited.text
    change = edited.json()
    assert (change["change"], change["seq"], change["content"]) == ("edit", 2, "")
    assert change["encrypted"] == new
    # an encrypted message takes no text, and a text message no envelope
    as_text = await client.patch(
        url, json={"clientMessageId": str(uuid.uuid4()), "content": "plain"}, headers=headers
    )
    refused(as_text, 409, "ENCRYPTION_MISMATCH")
    plain = await client.post(
        "/api/chat/message", json=body(session, content="hello"), headers=headers
    )
    to_envelope = await client.patch(
        f"/api/chat/{session.id}/messages/{plain.json()['messageId']}",
        json={"clientMessageId": str(uuid.uuid4()), "encrypted": new},
        headers=headers,
    )
    refused(to_envelope, 409, "ENCRYPTION_MISMATCH")
    both = await client.patch(
        url,
        json={"clientMessageId": str(uuid.uuid4()), "content": "x", "encrypted": new},
        headers=headers,
    )
    refused(both, 422, "CONTENT_OR_ENCRYPTED", "encrypted")
    # history shows the current envelope; events hold the edit with its envelope
    peer = as_user(session.b)
    history = (await client.get(f"/api/chat/{session.id}/history", headers=peer)).json()
    current = next(m for m in history["messages"] if m["messageId"] == message["messageId"])
    assert current["encrypted"] == new
    assert current["editedAt"] is not None
    events = (await client.get(f"/api/chat/{session.id}/events?after=1", headers=peer)).json()
    assert events["events"][0]["change"]["encrypted"] == new
    # a delete erases the envelope of the message and of its edits
    deleted = await client.request(
        "DELETE", url, json={"clientMessageId": str(uuid.uuid4())}, headers=headers
    )
    assert deleted.status_code == 200, deleted.text
    assert deleted.json().get("encrypted") is None
    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM chat_messages WHERE encrypted IS NOT NULL AND id = $1",
            uuid.UUID(message["messageId"]),
        )
        == 0
    )
    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM chat_message_changes WHERE encrypted IS NOT NULL"
        )
        == 0
    )
    history = (await client.get(f"/api/chat/{session.id}/history", headers=peer)).json()
    tomb = next(m for m in history["messages"] if m["messageId"] == message["messageId"])
    assert (tomb["deleted"], tomb["content"], tomb["encrypted"]) == (True, "", None)
    unread = (await client.get(f"/api/chat/{session.id}/unread", headers=peer)).json()
    assert unread["count"] == 1  # the text message only


async def test_a_bulk_send_mixes_text_and_envelopes(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers
) -> None:
    session = await new_session()
    env = envelope(session)
    items = [
        body(session, content="one"),
        body(session, encrypted=env),
        body(session, content="x", encrypted=env),
    ]
    answer = await client.post(
        "/api/chat/messages", json={"messages": items}, headers=as_user(session.a)
    )
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [200, 200, 422]
    assert results[1]["message"]["encrypted"] == env
    assert results[2]["problem"]["code"] == "CONTENT_OR_ENCRYPTED"


@pytest.mark.parametrize(
    ("content", "deleted"),
    [("text", False), (None, True)],  # text and envelope; a tombstone that kept its envelope
)
async def test_the_database_refuses_what_the_service_never_writes(
    db_pool: asyncpg.Pool, new_session: SessionFactory, content: str | None, deleted: bool
) -> None:
    session = await new_session()
    with pytest.raises(asyncpg.CheckViolationError):
        await db_pool.execute(
            "INSERT INTO chat_messages (id, session_id, seq, sender_profile_id, sender_email,"
            " sender_display_name, content, client_msg_id, sent_at, encrypted, deleted_at)"
            " VALUES ($1, $2, 1, $3, $4, 'A', $5, $6, now(), '\\x7b7d',"
            " CASE WHEN $7 THEN now() END)",
            uuid.uuid4(),
            session.id,
            session.a_profile,
            session.a,
            content,
            uuid.uuid4(),
            deleted,
        )
