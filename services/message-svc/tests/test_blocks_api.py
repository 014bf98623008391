"""Sends and changes in a blocked session, on the real PostgreSQL: refused from both sides
(403 SESSION_BLOCKED) as soon as session-svc's notification of the block arrives, even with
the participants cached; a retry of a send stored before the block is still answered; the
session list shows the state; an unblock opens the session again."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from chat_common.outbox import notify_session_changed
from chat_testing.waiting import eventually

from .conftest import ChatSession, SessionFactory
from .test_changes_api import delete, edit, problem, send

Headers = Callable[[str], dict[str, str]]


async def set_block(pool: asyncpg.Pool, session: ChatSession, who: str, blocked: bool) -> None:
    """What session-svc's block route writes and tells (tested there)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE chat_participants SET blocked_at = CASE WHEN $3 THEN now() END"
            " WHERE session_id = $1 AND user_email = $2",
            session.id,
            who,
            blocked,
        )
        await notify_session_changed(conn, session.id)


async def post(
    client: httpx.AsyncClient, session: ChatSession, headers: dict[str, str], cid: uuid.UUID
) -> httpx.Response:
    body = {"sessionId": str(session.id), "content": "hello?", "clientMessageId": str(cid)}
    return await client.post("/api/chat/message", json=body, headers=headers)


async def test_a_block_refuses_both_sides_at_once_and_an_unblock_restores(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    mine = await send(client, session, session.a, as_user, "hi")  # the participants now cached
    await send(client, session, session.b, as_user, "hi back")
    await set_block(db_pool, session, session.b, True)
    stored = 2  # and each probe sent before the roster heard of the block (it may be stored)

    async def refused() -> bool:
        nonlocal stored
        answer = await post(client, session, as_user(session.a), uuid.uuid4())
        stored += answer.status_code == 200
        return answer.status_code == 403

    await eventually(refused, within=5.0, what="the block to reach the cached roster")
    for who in (session.a, session.b):
        answer = await post(client, session, as_user(who), uuid.uuid4())
        problem(answer, 403, "SESSION_BLOCKED")
        bulk = await client.post(
            "/api/chat/messages",
            json={
                "messages": [
                    {
                        "sessionId": str(session.id),
                        "content": "x",
                        "clientMessageId": str(uuid.uuid4()),
                    }
                ]
            },
            headers=as_user(who),
        )
        assert bulk.status_code == 200, bulk.text
        assert bulk.json()["results"][0]["problem"]["code"] == "SESSION_BLOCKED"
    problem(await edit(client, session, mine, as_user(session.a), "edited"), 403, "SESSION_BLOCKED")
    problem(await delete(client, session, mine, as_user(session.a)), 403, "SESSION_BLOCKED")
    # a retry of a send stored before the block is answered with the stored message
    again = await post(client, session, as_user(session.a), uuid.UUID(mine["clientMessageId"]))
    assert again.status_code == 200, again.text
    assert again.json()["messageId"] == mine["messageId"]
    # reading stays open: history and the session list, which shows who blocks
    history = await client.get(f"/api/chat/{session.id}/history", headers=as_user(session.a))
    assert [m["seq"] for m in history.json()["messages"]] == list(range(stored, 0, -1))
    for who in (session.a, session.b):
        listed = await client.get("/api/chat/sessions", headers=as_user(who))
        [summary] = listed.json()["sessions"]
        assert summary["blockedBy"] == [session.b]
    assert (
        await db_pool.fetchval("SELECT last_seq FROM chat_sessions WHERE id = $1", session.id)
        == stored
    )

    await set_block(db_pool, session, session.b, False)

    async def open_again() -> bool:
        answer = await post(client, session, as_user(session.a), uuid.uuid4())
        return answer.status_code == 200

    await eventually(open_again, within=5.0, what="the unblock to reach the cached roster")
    await send(client, session, session.b, as_user, "welcome back")
    assert (await edit(client, session, mine, as_user(session.a), "edited")).status_code == 200
    listed = await client.get("/api/chat/sessions", headers=as_user(session.a))
    assert listed.json()["sessions"][0]["blockedBy"] == []


async def test_a_stranger_is_still_refused_as_a_stranger(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    await set_block(db_pool, session, session.a, True)
    answer = await post(client, session, as_user("eve@example.com"), uuid.uuid4())
    problem(answer, 403, "NOT_PARTICIPANT")


async def test_a_change_checks_the_block_under_the_session_lock(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    mine = await send(client, session, session.a, as_user, "hi")
    # blocked without telling message-svc: the cached roster still says open, the change's
    # own read under the lock refuses it
    await db_pool.execute(
        "UPDATE chat_participants SET blocked_at = now() WHERE session_id = $1 AND user_email = $2",
        session.id,
        session.b,
    )
    answer: Any = await edit(client, session, mine, as_user(session.a), "edited")
    problem(answer, 403, "SESSION_BLOCKED")
