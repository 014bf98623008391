"""History, unread, the session list and read/delivered marks, on the real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from chat_common import routing
from message_svc import repository
from message_svc.settings import Settings

from .conftest import ChatSession, SessionFactory, serving

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
    link: str | None = answer.headers.get("link")
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


def plan_nodes(plan: Any) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan."""
    found = [plan]
    for child in plan.get("Plans", []):
        found += plan_nodes(child)
    return found


@pytest.mark.parametrize(
    ("before", "after", "bounds"),
    [
        (None, None, ()),
        (900, None, ("seq < ",)),
        (None, 100, ("seq > ",)),
        (900, 100, ("seq > ", "seq < ")),
    ],
)
async def test_history_is_served_by_an_index_under_a_generic_plan(
    db_pool: asyncpg.Pool,
    new_session: SessionFactory,
    before: int | None,
    after: int | None,
    bounds: tuple[str, ...],
) -> None:
    """The repository's own page statements, planned once for any parameters (as a cached
    prepared statement is after a few runs): the seq bounds are index conditions, and the
    index gives the order (no sort)."""
    sessions = [await new_session() for _ in range(8)]
    async with db_pool.acquire() as conn:
        await conn.execute(
            """
            INSERT INTO chat_messages (id, session_id, seq, sender_profile_id, sender_email,
                                       sender_display_name, content, client_msg_id)
            SELECT gen_random_uuid(), s, n, gen_random_uuid(), 'alice@example.com', 'Alice',
                   'message ' || n, gen_random_uuid()
            FROM unnest($1::uuid[]) s, generate_series(1, 2500) n
            """,
            [s.id for s in sessions],
        )
        await conn.execute("ANALYZE chat_messages")
        statement = repository.history_statement(before=before is not None, after=after is not None)
        args = [f"'{sessions[3].id}'", *(str(b) for b in (after, before) if b is not None), "50"]
        await conn.execute(f"PREPARE page AS {statement}")
        try:
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE page({', '.join(args)})")
        finally:
            await conn.execute("DEALLOCATE page")
            await conn.execute("RESET plan_cache_mode")
    nodes = plan_nodes(json.loads(plan)[0]["Plan"])
    scans = [n for n in nodes if n.get("Relation Name") == "chat_messages"]
    assert len(scans) == 1, nodes
    scan = scans[0]
    assert scan["Node Type"] == "Index Scan", scan
    assert scan["Index Name"] == "chat_messages_seq_unique"
    assert "session_id = $1" in scan["Index Cond"]
    for bound in bounds:
        assert bound in scan["Index Cond"], scan["Index Cond"]
    assert "Filter" not in scan, scan
    assert not [n for n in nodes if n["Node Type"] == "Sort"]


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


async def test_unread_count_and_page_come_from_one_statement(
    settings_factory: Callable[..., Settings],
    new_session: SessionFactory,
    as_user: Headers,
    db_pool: asyncpg.Pool,
) -> None:
    session = await new_session()
    await db_pool.execute(
        """
        INSERT INTO chat_messages (id, session_id, seq, sender_profile_id, sender_email,
                                   sender_display_name, content, client_msg_id)
        SELECT gen_random_uuid(), $1, n, $2, $3, 'Bob', 'm' || n, gen_random_uuid()
        FROM generate_series(1, 230) n
        """,
        session.id,
        session.b_profile,
        session.b,
    )
    await db_pool.execute("UPDATE chat_sessions SET last_seq = 230 WHERE id = $1", session.id)
    async with serving(settings_factory(db_pool_max=1)) as served:
        statements: list[str] = []
        async with served.state.pool.acquire() as conn:
            conn.add_query_logger(lambda logged: statements.append(logged.query))
        answer = await served.client.get(
            f"/api/chat/{session.id}/unread", headers=as_user(session.a)
        )
        assert answer.status_code == 200
        unread = answer.json()
        assert unread["count"] == 230
        assert [m["seq"] for m in unread["messages"]] == list(range(1, 201))
        reading = [q for q in statements if "FROM chat_messages" in q]
        assert len(reading) == 1, statements
        nothing = await served.client.get(
            f"/api/chat/{session.id}/unread", headers=as_user(session.b)
        )
        assert nothing.json() == {"sessionId": str(session.id), "count": 0, "messages": []}


async def test_delivered_mark_sends_a_receipt_to_the_peer(
    client: httpx.AsyncClient, busy: ChatSession, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    before = await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox")
    marked = await client.post(
        f"/api/chat/{busy.id}/delivered", json={"upToSeq": 3}, headers=as_user(busy.b)
    )
    assert marked.json() == {"sessionId": str(busy.id), "readSeq": 0, "deliveredSeq": 3}
    receipts = await db_pool.fetch("SELECT * FROM chat_message_outbox WHERE event_type = 'receipt'")
    assert len(receipts) == 1
    receipt = receipts[0]
    assert receipt["routing_key"] == routing.session_key(busy.id)
    headers = json.loads(receipt["headers"])
    assert headers[routing.EVENT_HEADER] == "receipt"
    assert routing.user_key(busy.a) in headers["CC"]  # the peer hears of it
    assert json.loads(receipt["payload"]) == {
        "sessionId": str(busy.id),
        "kind": "delivered",
        "profileId": str(busy.b_profile),
        "email": busy.b,
        "upToSeq": 3,
    }
    # not moved: no second receipt
    again = await client.post(
        f"/api/chat/{busy.id}/delivered", json={"upToSeq": 2}, headers=as_user(busy.b)
    )
    assert again.json()["deliveredSeq"] == 3
    assert await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox") == before + 1


async def test_a_mark_whose_receipt_cannot_be_queued_does_not_move(
    settings_factory: Callable[..., Settings], busy: ChatSession, db_pool: asyncpg.Pool
) -> None:
    """The mark and its receipt are one transaction: when the outbox refuses the receipt,
    the mark stays where it was."""
    await db_pool.execute(
        """
        CREATE FUNCTION refuse_receipts() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'receipts refused'; END $$;
        CREATE TRIGGER refuse_receipts BEFORE INSERT ON chat_message_outbox
        FOR EACH ROW WHEN (NEW.event_type = 'receipt') EXECUTE FUNCTION refuse_receipts();
        """
    )
    try:
        before = await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox")
        async with serving(settings_factory()) as served:
            for kind in ("read", "delivered"):
                with pytest.raises(asyncpg.RaiseError, match="receipts refused"):
                    await served.state.messages.mark(busy.a, busy.id, kind, 6)
    finally:
        await db_pool.execute(
            "DROP TRIGGER refuse_receipts ON chat_message_outbox; DROP FUNCTION refuse_receipts()"
        )
    marks = await db_pool.fetchrow(
        "SELECT read_seq, delivered_seq FROM chat_participants WHERE session_id = $1"
        " AND user_email = $2",
        busy.id,
        busy.a,
    )
    assert marks is not None
    assert (marks["read_seq"], marks["delivered_seq"]) == (0, 0)
    assert await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox") == before


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


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "upToSeq"),
        ({"upToSeq": -1}, "upToSeq"),
        ({"upToSeq": "5"}, "upToSeq"),
        ({"upToSeq": 1, "x": 1}, "x"),
    ],
)
async def test_bad_mark_bodies_are_422(
    client: httpx.AsyncClient,
    busy: ChatSession,
    as_user: Headers,
    body: dict[str, object],
    field: str,
) -> None:
    answer = await client.post(f"/api/chat/{busy.id}/read", json=body, headers=as_user(busy.a))
    assert answer.status_code == 422
    assert answer.json()["field"] == field


async def test_session_list_in_one_query(
    client: httpx.AsyncClient,
    settings_factory: Callable[..., Settings],
    new_session: SessionFactory,
    as_user: Headers,
) -> None:
    quiet = await new_session(b="carol@example.com")
    busy = await new_session()
    await send(client, busy, busy.b, as_user, 2)
    await send(client, busy, busy.a, as_user, 1)
    # another instance with one pooled connection: every statement it runs is logged
    async with serving(settings_factory(db_pool_max=1)) as served:
        client = served.client
        statements: list[str] = []
        async with served.state.pool.acquire() as conn:
            conn.add_query_logger(lambda logged: statements.append(logged.query))
        answer = await client.get("/api/chat/sessions", headers=as_user("alice@example.com"))
        assert len(statements) == 1, statements
        assert "FROM chat_participants me" in statements[0]
        nobody = await client.get("/api/chat/sessions", headers=as_user("zed@example.com"))
        assert nobody.json() == {"sessions": []}
        assert len(statements) == 2
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
    assert garbage.status_code == 422, garbage.text
    assert garbage.headers["content-type"] == "application/problem+json"
    assert garbage.json()["field"] == "sessionId"
    assert await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox") == before


async def test_the_session_list_is_paged_by_activity_with_a_cursor(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers
) -> None:
    chats = [await new_session(b=f"peer{i}@example.com") for i in range(5)]
    for i, chat in enumerate(chats):  # activity: chats[4] most recent, chats[0] the oldest
        await send(client, chat, chat.b, as_user, i + 1)
    seen: list[str] = []
    unread: list[int] = []
    url = "/api/chat/sessions?limit=2"
    pages = 0
    while url:
        answer = await client.get(url, headers=as_user("alice@example.com"))
        assert answer.status_code == 200
        page = answer.json()
        seen += [s["sessionId"] for s in page["sessions"]]
        unread += [s["unreadCount"] for s in page["sessions"]]
        pages += 1
        link = answer.headers.get("link")
        assert (link is None) == ("nextBefore" not in page)
        url = link.split(">")[0].lstrip("<") if link else ""
    assert seen == [str(c.id) for c in reversed(chats)]  # most recent first, each once
    assert unread == [5, 4, 3, 2, 1]
    assert pages == 3


@pytest.mark.parametrize("cursor", ["nonsense", "²", "x" * 300, "MjAyNnwxMjM"])
async def test_a_cursor_the_api_did_not_give_is_422(
    client: httpx.AsyncClient, as_user: Headers, cursor: str
) -> None:
    answer = await client.get(
        "/api/chat/sessions", params={"before": cursor}, headers=as_user("alice@example.com")
    )
    assert answer.status_code == 422
    assert answer.json()["field"] == "before"
