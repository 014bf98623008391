"""Edits and deletes on the real PostgreSQL: PATCH and DELETE
/api/chat/{sessionId}/messages/{messageId}, the session's events, and what history, unread and
the session list show of them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from chat_common import routing

from .conftest import ChatSession, SessionFactory, serving

Headers = Callable[[str], dict[str, str]]


async def send(
    client: httpx.AsyncClient, session: ChatSession, who: str, headers: Headers, content: str
) -> dict[str, Any]:
    answer = await client.post(
        "/api/chat/message",
        json={
            "sessionId": str(session.id),
            "content": content,
            "clientMessageId": str(uuid.uuid4()),
        },
        headers=headers(who),
    )
    assert answer.status_code == 200, answer.text
    message: dict[str, Any] = answer.json()
    return message


def url(session: ChatSession | uuid.UUID, message: dict[str, Any] | uuid.UUID | str) -> str:
    sid = session.id if isinstance(session, ChatSession) else session
    mid = message["messageId"] if isinstance(message, dict) else message
    return f"/api/chat/{sid}/messages/{mid}"


async def edit(
    client: httpx.AsyncClient,
    session: ChatSession,
    message: dict[str, Any] | uuid.UUID | str,
    headers: dict[str, str],
    content: str,
    cid: uuid.UUID | None = None,
) -> httpx.Response:
    body = {"content": content, "clientMessageId": str(cid or uuid.uuid4())}
    return await client.patch(url(session, message), json=body, headers=headers)


async def delete(
    client: httpx.AsyncClient,
    session: ChatSession,
    message: dict[str, Any] | uuid.UUID | str,
    headers: dict[str, str],
    cid: uuid.UUID | None = None,
) -> httpx.Response:
    body = {"clientMessageId": str(cid or uuid.uuid4())}
    return await client.request("DELETE", url(session, message), json=body, headers=headers)


async def last_seq(pool: asyncpg.Pool, session: ChatSession) -> int:
    return int(await pool.fetchval("SELECT last_seq FROM chat_sessions WHERE id = $1", session.id))


async def written(pool: asyncpg.Pool) -> tuple[int, int]:
    changes = await pool.fetchval("SELECT count(*) FROM chat_message_changes")
    outbox = await pool.fetchval("SELECT count(*) FROM chat_message_outbox")
    return int(changes), int(outbox)


def problem(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == code, answer.text


async def test_an_edit_is_an_event_with_its_own_seq_and_changes_the_message(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    message = await send(client, session, session.a, as_user, "see you at 7")
    cid = uuid.uuid4()
    answer = await edit(client, session, message, as_user(session.a), "see you at 8", cid)
    assert answer.status_code == 200, answer.text
    assert "Idempotent-Replayed" not in answer.headers
    change = answer.json()
    assert change["change"] == "edit"
    assert change["seq"] == 2  # its own place, after the message
    assert change["messageId"] == message["messageId"]
    assert change["messageSeq"] == 1
    assert change["content"] == "see you at 8"
    assert change["clientMessageId"] == str(cid)
    assert change["senderEmail"] == session.a
    assert change["senderId"] == str(session.a_profile)
    assert await last_seq(db_pool, session) == 2
    row = await db_pool.fetchrow(
        "SELECT content, edited_at, deleted_at FROM chat_messages WHERE id = $1",
        uuid.UUID(message["messageId"]),
    )
    assert row is not None
    assert row["content"] == "see you at 8"
    assert row["edited_at"] is not None
    assert row["deleted_at"] is None
    # one outbox row, like a message's: the session's key, both users' keys, x-seq its own
    outbox = await db_pool.fetchrow("SELECT * FROM chat_message_outbox WHERE event_type = 'edit'")
    assert outbox is not None
    assert outbox["routing_key"] == routing.session_key(session.id)
    headers = json.loads(outbox["headers"])
    assert (headers["x-event"], headers["x-seq"]) == ("edit", 2)
    assert headers["x-session-id"] == str(session.id)
    assert sorted(headers["CC"]) == sorted(
        [routing.user_key(session.a), routing.user_key(session.b)]
    )
    assert json.loads(outbox["payload"]) == change
    # history: the message at its own seq with the current text and editedAt
    page = (await client.get(f"/api/chat/{session.id}/history", headers=as_user(session.b))).json()
    assert [m["seq"] for m in page["messages"]] == [1]
    shown = page["messages"][0]
    assert shown["content"] == "see you at 8"
    assert shown["editedAt"] is not None
    assert shown["deleted"] is False


async def test_the_same_change_again_answers_the_same_and_writes_nothing(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    message = await send(client, session, session.a, as_user, "typo")
    cid = uuid.uuid4()
    first = await edit(client, session, message, as_user(session.a), "fixed", cid)
    assert first.status_code == 200
    before = (await written(db_pool), await last_seq(db_pool, session))
    again = await edit(client, session, message, as_user(session.a), "fixed", cid)
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert (await written(db_pool), await last_seq(db_pool, session)) == before
    removal = uuid.uuid4()
    gone = await delete(client, session, message, as_user(session.a), removal)
    assert gone.status_code == 200
    before = (await written(db_pool), await last_seq(db_pool, session))
    gone_again = await delete(client, session, message, as_user(session.a), removal)
    assert gone_again.status_code == 200
    assert gone_again.headers["Idempotent-Replayed"] == "true"
    assert gone_again.json() == gone.json()
    assert (await written(db_pool), await last_seq(db_pool, session)) == before
    # the edit's retry after the delete: the same change, its text gone with the message's
    late = await edit(client, session, message, as_user(session.a), "fixed", cid)
    assert late.status_code == 200
    assert late.headers["Idempotent-Replayed"] == "true"
    assert {**late.json(), "content": "fixed"} == first.json()
    assert late.json()["content"] == ""
    assert (await written(db_pool), await last_seq(db_pool, session)) == before


async def test_concurrent_retries_of_one_edit_store_one_change(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    message = await send(client, session, session.a, as_user, "one")
    cid = uuid.uuid4()
    answers = await asyncio.gather(
        *(edit(client, session, message, as_user(session.a), "two", cid) for _ in range(8))
    )
    assert [a.status_code for a in answers] == [200] * 8
    assert len({a.json()["seq"] for a in answers}) == 1
    assert sum(1 for a in answers if "Idempotent-Replayed" not in a.headers) == 1
    assert await written(db_pool) == (1, 2)  # the message's outbox row and the edit's
    assert await last_seq(db_pool, session) == 2


async def test_a_delete_erases_the_content_and_keeps_the_place(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    first = await send(client, session, session.a, as_user, "secret plan")
    second = await send(client, session, session.b, as_user, "tell me")
    edited = await edit(client, session, first, as_user(session.a), "secret plan v2")
    assert edited.status_code == 200
    answer = await delete(client, session, first, as_user(session.a))
    assert answer.status_code == 200, answer.text
    change = answer.json()
    assert (change["change"], change["seq"], change["messageSeq"]) == ("delete", 4, 1)
    assert change["content"] == ""
    # gone from storage, not hidden: the message's text and its edits' text
    mid = uuid.UUID(first["messageId"])
    row = await db_pool.fetchrow(
        "SELECT content, deleted_at, seq FROM chat_messages WHERE id = $1", mid
    )
    assert row is not None
    assert row["content"] is None
    assert row["deleted_at"] is not None
    assert row["seq"] == 1
    texts = await db_pool.fetch(
        "SELECT kind, content FROM chat_message_changes WHERE message_id = $1 ORDER BY seq", mid
    )
    assert [(r["kind"], r["content"]) for r in texts] == [("edit", None), ("delete", None)]
    # history keeps the tombstone at its seq
    page = (await client.get(f"/api/chat/{session.id}/history", headers=as_user(session.b))).json()
    assert [m["seq"] for m in page["messages"]] == [2, 1]
    tombstone = page["messages"][1]
    assert tombstone["deleted"] is True
    assert tombstone["content"] == ""
    assert tombstone["deletedAt"] is not None
    assert page["messages"][0]["content"] == second["content"]
    # the sender's retry of the original send answers the tombstone, stores nothing
    retry = await client.post(
        "/api/chat/message",
        json={
            "sessionId": str(session.id),
            "content": "secret plan",
            "clientMessageId": first["clientMessageId"],
        },
        headers=as_user(session.a),
    )
    assert retry.status_code == 200, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert (retry.json()["deleted"], retry.json()["content"]) == (True, "")
    assert await last_seq(db_pool, session) == 4


async def test_refusals_change_nothing(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    elsewhere = await new_session("carol@example.com", "dave@example.com")
    message = await send(client, session, session.a, as_user, "mine")
    foreign = await send(client, elsewhere, elsewhere.a, as_user, "theirs")
    used = uuid.uuid4()
    assert (await edit(client, session, message, as_user(session.a), "ok", used)).status_code == 200
    before = (await written(db_pool), await last_seq(db_pool, session))
    alice, bob, eve = as_user(session.a), as_user(session.b), as_user("eve@example.com")

    # only the sender may edit or delete
    problem(await edit(client, session, message, bob, "hijacked"), 403, "NOT_MESSAGE_SENDER")
    problem(await delete(client, session, message, bob), 403, "NOT_MESSAGE_SENDER")
    # a stranger is not even a participant
    problem(await edit(client, session, message, eve, "x"), 403, "NOT_PARTICIPANT")
    problem(await delete(client, session, message, eve), 403, "NOT_PARTICIPANT")
    # unknown message, a message of another session, unknown session
    problem(await edit(client, session, uuid.uuid4(), alice, "x"), 404, "MESSAGE_NOT_FOUND")
    problem(await delete(client, session, foreign, alice), 404, "MESSAGE_NOT_FOUND")
    problem(
        await client.patch(
            url(uuid.uuid4(), message),
            json={"content": "x", "clientMessageId": str(uuid.uuid4())},
            headers=alice,
        ),
        404,
        "SESSION_NOT_FOUND",
    )
    # content rules as for sends
    problem(await edit(client, session, message, alice, "   "), 422, "CONTENT_BLANK")
    problem(await edit(client, session, message, alice, "x" * 4097), 413, "CONTENT_TOO_LARGE")
    # the client id of the edit, for a delete
    problem(await delete(client, session, message, alice, used), 409, "CLIENT_MESSAGE_ID_REUSED")
    # malformed path and bodies
    answer = await client.patch(
        url(session, "not-a-uuid"), json={"content": "x", "clientMessageId": str(uuid.uuid4())}
    )
    assert answer.status_code == 401  # no token: refused before anything else
    answer = await client.patch(
        url(session, "not-a-uuid"),
        json={"content": "x", "clientMessageId": str(uuid.uuid4())},
        headers=alice,
    )
    problem(answer, 422, "INVALID_INPUT")
    answer = await client.patch(url(session, message), json={"content": "x"}, headers=alice)
    assert answer.status_code in (400, 422)
    assert answer.json()["field"] == "clientMessageId"
    answer = await client.request(
        "DELETE", url(session, message), json={"clientMessageId": "x", "extra": 1}, headers=alice
    )
    assert answer.status_code in (400, 422), answer.text
    assert (await written(db_pool), await last_seq(db_pool, session)) == before

    # a deleted message can be neither edited nor deleted again
    assert (await delete(client, session, message, alice)).status_code == 200
    before = (await written(db_pool), await last_seq(db_pool, session))
    problem(await edit(client, session, message, alice, "back"), 409, "MESSAGE_DELETED")
    problem(await delete(client, session, message, alice), 409, "MESSAGE_DELETED")
    problem(await edit(client, session, message, bob, "back"), 403, "NOT_MESSAGE_SENDER")
    assert (await written(db_pool), await last_seq(db_pool, session)) == before


async def test_an_edit_past_the_window_is_refused_and_a_delete_is_not(
    settings_factory: Callable[..., Any],
    new_session: SessionFactory,
    as_user: Headers,
    db_pool: asyncpg.Pool,
) -> None:
    session = await new_session()
    async with serving(settings_factory(edit_window_seconds=60)) as served:
        client = served.client
        fresh = await send(client, session, session.a, as_user, "fresh")
        old = await send(client, session, session.a, as_user, "old")
        await db_pool.execute(
            "UPDATE chat_messages SET sent_at = now() - interval '61 seconds' WHERE id = $1",
            uuid.UUID(old["messageId"]),
        )
        assert (await edit(client, session, fresh, as_user(session.a), "ok")).status_code == 200
        before = (await written(db_pool), await last_seq(db_pool, session))
        refused = await edit(client, session, old, as_user(session.a), "too late")
        problem(refused, 409, "EDIT_WINDOW_CLOSED")
        assert (await written(db_pool), await last_seq(db_pool, session)) == before
        assert (
            await db_pool.fetchval(
                "SELECT content FROM chat_messages WHERE id = $1", uuid.UUID(old["messageId"])
            )
            == "old"
        )
        assert (await delete(client, session, old, as_user(session.a))).status_code == 200
    async with serving(settings_factory(edit_window_seconds=0)) as served:
        message = await send(served.client, session, session.a, as_user, "no edits here")
        refused = await edit(served.client, session, message, as_user(session.a), "x")
        problem(refused, 409, "EDIT_WINDOW_CLOSED")


async def test_events_hold_every_seq_in_order(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers
) -> None:
    session = await new_session()
    one = await send(client, session, session.a, as_user, "one")
    two = await send(client, session, session.b, as_user, "two")
    assert (await edit(client, session, one, as_user(session.a), "one!")).status_code == 200
    assert (await delete(client, session, two, as_user(session.b))).status_code == 200
    await send(client, session, session.a, as_user, "three")
    answer = await client.get(f"/api/chat/{session.id}/events", headers=as_user(session.b))
    assert answer.status_code == 200, answer.text
    events = answer.json()["events"]
    assert [(e["seq"], e["event"]) for e in events] == [
        (1, "message"),
        (2, "message"),
        (3, "edit"),
        (4, "delete"),
        (5, "message"),
    ]
    assert events[0]["message"]["content"] == "one!"  # messages in their current state
    assert events[1]["message"]["deleted"] is True
    assert events[1]["message"]["content"] == ""
    assert events[2]["change"]["messageId"] == one["messageId"]
    assert (events[2]["change"]["content"], events[2]["change"]["seq"]) == ("one!", 3)
    assert events[3]["change"]["messageId"] == two["messageId"]
    assert "change" not in events[0]
    assert "message" not in events[2]
    # pages follow each other by seq; before bounds them
    url_: str | None = f"/api/chat/{session.id}/events?limit=2"
    seen: list[int] = []
    while url_:
        page = await client.get(url_, headers=as_user(session.a))
        seen += [e["seq"] for e in page.json()["events"]]
        link = page.headers.get("link")
        url_ = link[link.index("<") + 1 : link.index(">")] if link else None
    assert seen == [1, 2, 3, 4, 5]
    page = await client.get(
        f"/api/chat/{session.id}/events?after=1&before=4", headers=as_user(session.a)
    )
    assert [e["seq"] for e in page.json()["events"]] == [2, 3]
    stranger = await client.get(
        f"/api/chat/{session.id}/events", headers=as_user("eve@example.com")
    )
    problem(stranger, 403, "NOT_PARTICIPANT")


async def test_changes_are_never_unread_and_a_tombstone_is_not_either(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers
) -> None:
    session = await new_session()
    kept = await send(client, session, session.a, as_user, "kept")
    dropped = await send(client, session, session.a, as_user, "dropped")
    assert (await edit(client, session, kept, as_user(session.a), "kept!")).status_code == 200
    assert (await delete(client, session, dropped, as_user(session.a))).status_code == 200
    unread = (await client.get(f"/api/chat/{session.id}/unread", headers=as_user(session.b))).json()
    assert unread["count"] == 1
    assert [(m["seq"], m["content"]) for m in unread["messages"]] == [(1, "kept!")]
    listed = (await client.get("/api/chat/sessions", headers=as_user(session.b))).json()
    summary = listed["sessions"][0]
    assert summary["unreadCount"] == 1
    # the latest message, not the latest seq (an edit or delete): here the tombstone
    last = summary["lastMessage"]
    assert (last["seq"], last["deleted"], last["content"]) == (2, True, "")
    # a read mark may name a change's seq; the message it covers is seen
    marked = await client.post(
        f"/api/chat/{session.id}/read", json={"upToSeq": 4}, headers=as_user(session.b)
    )
    assert marked.json()["readSeq"] == 4
    unread = (await client.get(f"/api/chat/{session.id}/unread", headers=as_user(session.b))).json()
    assert unread["count"] == 0
    history = await client.get(f"/api/chat/{session.id}/history", headers=as_user(session.a))
    assert [m["seen"] for m in history.json()["messages"]] == [True, True]


@pytest.mark.parametrize("kind", ["edit", "delete"])
async def test_changes_and_sends_share_one_gapless_order(
    client: httpx.AsyncClient,
    new_session: SessionFactory,
    as_user: Headers,
    db_pool: asyncpg.Pool,
    kind: str,
) -> None:
    session = await new_session()
    targets = [await send(client, session, session.a, as_user, f"m{i}") for i in range(10)]

    async def change(target: dict[str, Any]) -> httpx.Response:
        if kind == "edit":
            return await edit(client, session, target, as_user(session.a), "changed")
        return await delete(client, session, target, as_user(session.a))

    answers = await asyncio.gather(
        *(change(t) for t in targets),
        *(
            client.post(
                "/api/chat/message",
                json={
                    "sessionId": str(session.id),
                    "content": f"n{i}",
                    "clientMessageId": str(uuid.uuid4()),
                },
                headers=as_user(session.b),
            )
            for i in range(10)
        ),
    )
    assert [a.status_code for a in answers] == [200] * 20
    seqs = sorted(a.json()["seq"] for a in answers)
    assert seqs == list(range(11, 31))
    events = await client.get(
        f"/api/chat/{session.id}/events?limit=200", headers=as_user(session.a)
    )
    assert [e["seq"] for e in events.json()["events"]] == list(range(1, 31))
    outbox = await db_pool.fetch(
        "SELECT headers FROM chat_message_outbox WHERE session_id = $1 ORDER BY id", session.id
    )
    # the relay publishes a session's rows in id order: that is the seq order
    assert [json.loads(r["headers"])["x-seq"] for r in outbox] == list(range(1, 31))
