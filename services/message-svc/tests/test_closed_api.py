"""Sends and changes in a session closed for good (a participant's account was deleted), on
the real PostgreSQL: refused with 403 SESSION_CLOSED once session-svc's notification arrives,
and even before it (a send that waited for the erasure's lock stores nothing); the session
list shows the state; a retry of a send stored before the close is still answered."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg
import httpx

from chat_common.outbox import notify_session_changed
from chat_testing.waiting import eventually

from .conftest import ChatSession, SessionFactory
from .test_blocks_api import post
from .test_changes_api import delete, edit, problem, send

Headers = Callable[[str], dict[str, str]]


async def close(pool: asyncpg.Pool, session: ChatSession, *, tell: bool = True) -> None:
    """What session-svc's erasure writes of the session (tested there)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE chat_sessions SET closed_at = now(), closed_reason = 'PARTICIPANT_DELETED'"
            " WHERE id = $1",
            session.id,
        )
        if tell:
            await notify_session_changed(conn, session.id)


async def test_a_closed_session_refuses_sends_and_changes(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    mine = await send(client, session, session.b, as_user, "hi")  # the participants now cached
    await close(db_pool, session)

    async def refused() -> bool:
        answer = await post(client, session, as_user(session.b), uuid.uuid4())
        return answer.status_code == 403

    await eventually(refused, within=5.0, what="the close to reach the cached roster")
    problem(await post(client, session, as_user(session.b), uuid.uuid4()), 403, "SESSION_CLOSED")
    problem(await edit(client, session, mine, as_user(session.b), "x"), 403, "SESSION_CLOSED")
    problem(await delete(client, session, mine, as_user(session.b)), 403, "SESSION_CLOSED")
    again = await post(client, session, as_user(session.b), uuid.UUID(mine["clientMessageId"]))
    assert again.status_code == 200, again.text
    assert again.json()["messageId"] == mine["messageId"]
    listed = await client.get("/api/chat/sessions", headers=as_user(session.b))
    assert listed.status_code == 200, listed.text
    (summary,) = [s for s in listed.json()["sessions"] if s["sessionId"] == str(session.id)]
    assert summary["state"] == "CLOSED"
    assert summary["closedReason"] == "PARTICIPANT_DELETED"


async def test_a_send_racing_the_close_stores_nothing(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    await send(client, session, session.b, as_user, "hi")  # the participants now cached
    await close(db_pool, session, tell=False)  # the roster still thinks it open
    problem(await post(client, session, as_user(session.b), uuid.uuid4()), 403, "SESSION_CLOSED")
    count = await db_pool.fetchval(
        "SELECT count(*) FROM chat_messages WHERE session_id = $1", session.id
    )
    assert count == 1
    listed = await client.get("/api/chat/sessions", headers=as_user(session.a))
    (summary,) = [s for s in listed.json()["sessions"] if s["sessionId"] == str(session.id)]
    assert summary["state"] == "CLOSED"
