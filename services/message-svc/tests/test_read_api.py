"""History, unread, the session list and read/delivered marks, on the real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from .conftest import ChatSession, SessionFactory

Headers = Callable[[str], dict[str, str]]


async def send(
    client: httpx.AsyncClient, session: ChatSession, who: str, headers: Headers, n: int
) -> list[int]:
    seqs = []
    for i in range(n):
        answer = await client.post(
            "/api/chat/message",
            json={
                "sessionId": str(session.id),
                "content": f"{who} {i}",
                "clientMessageId": str(uuid.uuid4()),
            },
            headers=headers(who),
        )
        assert answer.status_code == 200, answer.text
        seqs.append(answer.json()["seq"])
    return seqs


def next_link(answer: httpx.Response) -> str | None:
    link = answer.headers.get("link")
    if not link:
        return None
    assert link.endswith('rel="next"')
    return link[link.index("<") + 1 : link.index(">")]


@pytest.fixture
async def busy(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers
) -> ChatSession:
    session = await new_session()
    await send(client, session, session.a, as_user, 4)
    await send(client, session, session.b, as_user, 3)
    return session


async def test_history_pages_cover_every_message_once(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers
) -> None:
    session = await new_session()
    await send(client, session, session.a, as_user, 23)
    url: str | None = f"/api/chat/{session.id}/history?limit=5"
    seen: list[int] = []
    pages = 0
    while url:
        answer = await client.get(url, headers=as_user(session.b))
        assert answer.status_code == 200
        page = [m["seq"] for m in answer.json()["messages"]]
        assert page == sorted(page, reverse=True)  # newest first
        seen += page
        pages += 1
        url = next_link(answer)
    assert seen == list(range(23, 0, -1))
    assert pages == 5


async def test_history_after_catches_up_oldest_first_pages(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers
) -> None:
    session = await new_session()
    await send(client, session, session.a, as_user, 12)
    answer = await client.get(
        f"/api/chat/{session.id}/history?after=3&limit=4", headers=as_user(session.a)
    )
    assert [m["seq"] for m in answer.json()["messages"]] == [7, 6, 5, 4]
    link = next_link(answer)
    assert link is not None
    assert parse_qs(urlsplit(link).query) == {"limit": ["4"], "after": ["7"]}
    tail = await client.get(
        f"/api/chat/{session.id}/history?after=10&limit=4", headers=as_user(session.a)
    )
    assert [m["seq"] for m in tail.json()["messages"]] == [12, 11]
    assert next_link(tail) is None


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "limit=x", "before=-1", "after=abc", "before=0"]
)
async def test_bad_history_queries_are_422(
    client: httpx.AsyncClient, busy: ChatSession, as_user: Headers, query: str
) -> None:
    answer = await client.get(f"/api/chat/{busy.id}/history?{query}", headers=as_user(busy.a))
    assert answer.status_code == 422
    assert answer.json()["field"] == query.split("=")[0]


async def test_history_is_served_by_an_index(db_pool: asyncpg.Pool, busy: ChatSession) -> None:
    async with db_pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) SELECT * FROM chat_messages m"
            " WHERE m.session_id = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT 50",
            busy.id,
            100,
        )
    assert "chat_messages_seq_unique" in json.dumps(plan)


async def test_unread_then_read_mark(
    client: httpx.AsyncClient, busy: ChatSession, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    unread = (await client.get(f"/api/chat/{busy.id}/unread", headers=as_user(busy.a))).json()
    # alice sent 1..4, bob 5..7: alice has bob's three unread, oldest first
    assert unread["count"] == 3
    assert [m["seq"] for m in unread["messages"]] == [5, 6, 7]
    before = await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox")
    marked = await client.post(
        f"/api/chat/{busy.id}/read", json={"upToSeq": 6}, headers=as_user(busy.a)
    )
    assert marked.json() == {"sessionId": str(busy.id), "readSeq": 6, "deliveredSeq": 6}
    unread = (await client.get(f"/api/chat/{busy.id}/unread", headers=as_user(busy.a))).json()
    assert unread["count"] == 1
    receipt = await db_pool.fetchrow(
        "SELECT * FROM chat_message_outbox WHERE event_type = 'receipt'"
    )
    assert receipt is not None
    assert json.loads(receipt["payload"])["upToSeq"] == 6
    assert json.loads(receipt["payload"])["kind"] == "read"
    # never backwards, and no new receipt when nothing moved
    back = await client.post(
        f"/api/chat/{busy.id}/read", json={"upToSeq": 2}, headers=as_user(busy.a)
    )
    assert back.json()["readSeq"] == 6
    assert await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox") == before + 1
    # capped at the last seq
    far = await client.post(
        f"/api/chat/{busy.id}/read", json={"upToSeq": 1000}, headers=as_user(busy.a)
    )
    assert far.json()["readSeq"] == 7


async def test_delivered_and_seen_come_from_the_recipients_marks(
    client: httpx.AsyncClient, busy: ChatSession, as_user: Headers
) -> None:
    await client.post(
        f"/api/chat/{busy.id}/delivered", json={"upToSeq": 3}, headers=as_user(busy.b)
    )
    await client.post(f"/api/chat/{busy.id}/read", json={"upToSeq": 2}, headers=as_user(busy.b))
    history = await client.get(f"/api/chat/{busy.id}/history", headers=as_user(busy.a))
    flags = {m["seq"]: (m["delivered"], m["seen"]) for m in history.json()["messages"]}
    assert flags[1] == flags[2] == (True, True)
    assert flags[3] == (True, False)
    assert flags[4] == (False, False)
    # bob's own messages depend on alice's marks, which have not moved
    assert flags[5] == (False, False)


@pytest.mark.parametrize("body", [{}, {"upToSeq": -1}, {"upToSeq": "5"}, {"upToSeq": 1, "x": 1}])
async def test_bad_mark_bodies_are_422(
    client: httpx.AsyncClient, busy: ChatSession, as_user: Headers, body: dict[str, object]
) -> None:
    answer = await client.post(f"/api/chat/{busy.id}/read", json=body, headers=as_user(busy.a))
    assert answer.status_code == 422


async def test_session_list_in_one_query(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers
) -> None:
    quiet = await new_session(b="carol@example.com")
    busy = await new_session()
    await send(client, busy, busy.b, as_user, 2)
    await send(client, busy, busy.a, as_user, 1)
    answer = await client.get("/api/chat/sessions", headers=as_user("alice@example.com"))
    sessions = answer.json()["sessions"]
    assert [s["sessionId"] for s in sessions] == [str(busy.id), str(quiet.id)]
    first, second = sessions
    assert first["peer"]["email"] == "bob@example.com"
    assert first["me"]["email"] == "alice@example.com"
    assert first["lastMessage"]["seq"] == 3
    assert first["lastMessage"]["senderEmail"] == "alice@example.com"
    assert first["unreadCount"] == 2
    assert second["lastMessage"] is None
    assert second["unreadCount"] == 0
    nobody = await client.get("/api/chat/sessions", headers=as_user("zed@example.com"))
    assert nobody.json() == {"sessions": []}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/chat/{id}/history", None),
        ("GET", "/api/chat/{id}/unread", None),
        ("POST", "/api/chat/{id}/read", {"upToSeq": 1}),
        ("POST", "/api/chat/{id}/delivered", {"upToSeq": 1}),
    ],
)
async def test_only_participants_read_or_mark(
    client: httpx.AsyncClient,
    busy: ChatSession,
    as_user: Headers,
    db_pool: asyncpg.Pool,
    method: str,
    path: str,
    body: dict[str, int] | None,
) -> None:
    url = path.format(id=busy.id)
    before = await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox")
    outsider = await client.request(method, url, json=body, headers=as_user("eve@example.com"))
    assert outsider.status_code == 403
    anonymous = await client.request(method, url, json=body)
    assert anonymous.status_code == 401
    unknown = await client.request(
        method, path.format(id=uuid.uuid4()), json=body, headers=as_user(busy.a)
    )
    assert unknown.status_code == 404
    garbage = await client.request(
        method, path.format(id="not-a-uuid"), json=body, headers=as_user(busy.a)
    )
    assert garbage.status_code == 404
    assert await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox") == before
