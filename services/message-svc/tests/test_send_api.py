"""POST /api/chat/message on the real PostgreSQL: one transaction, idempotency, rules."""

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

from .conftest import ChatSession, SessionFactory

Headers = Callable[[str], dict[str, str]]


def body(session: ChatSession, content: str = "hi", cid: uuid.UUID | None = None) -> dict[str, str]:
    return {
        "sessionId": str(session.id),
        "content": content,
        "clientMessageId": str(cid or uuid.uuid4()),
    }


async def counts(pool: asyncpg.Pool) -> tuple[int, int]:
    messages = await pool.fetchval("SELECT count(*) FROM chat_messages")
    outbox = await pool.fetchval("SELECT count(*) FROM chat_message_outbox")
    return int(messages), int(outbox)


async def test_send_stores_the_message_and_one_outbox_row(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    answer = await client.post("/api/chat/message", json=body(session), headers=as_user(session.a))
    assert answer.status_code == 200, answer.text
    message = answer.json()
    assert message["seq"] == 1
    assert message["senderEmail"] == session.a
    assert message["senderId"] == str(session.a_profile)
    assert message["senderDisplayName"] == "Alice"
    assert message["delivered"] is False
    assert message["seen"] is False
    assert "Idempotent-Replayed" not in answer.headers
    row = await db_pool.fetchrow("SELECT * FROM chat_message_outbox")
    assert row is not None
    assert row["routing_key"] == routing.session_key(session.id)
    assert (row["retry_count"], row["slot"]) == (0, 0)  # waiting, in the current slot
    headers = json.loads(row["headers"])
    assert headers["x-event"] == "message"
    assert headers["x-seq"] == 1
    assert sorted(headers["CC"]) == sorted(
        [routing.user_key(session.a), routing.user_key(session.b)]
    )
    assert json.loads(row["payload"])["messageId"] == message["messageId"]


async def test_same_client_id_returns_the_same_message_and_writes_nothing(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    payload = body(session)
    first = await client.post("/api/chat/message", json=payload, headers=as_user(session.a))
    again = await client.post("/api/chat/message", json=payload, headers=as_user(session.a))
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["messageId"] == first.json()["messageId"]
    assert again.json()["seq"] == first.json()["seq"]
    assert await counts(db_pool) == (1, 1)


async def test_another_users_client_id_does_not_collide(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    cid = uuid.uuid4()
    mine = await client.post(
        "/api/chat/message", json=body(session, "a", cid), headers=as_user(session.a)
    )
    theirs = await client.post(
        "/api/chat/message", json=body(session, "b", cid), headers=as_user(session.b)
    )
    assert mine.status_code == theirs.status_code == 200
    assert mine.json()["messageId"] != theirs.json()["messageId"]
    assert theirs.json()["content"] == "b"


async def test_fifty_racing_duplicates_make_one_row(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    payload = body(session)
    headers = as_user(session.a)
    answers = await asyncio.gather(
        *(client.post("/api/chat/message", json=payload, headers=headers) for _ in range(50))
    )
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["messageId"] for a in answers}) == 1
    assert await counts(db_pool) == (1, 1)
    assert await db_pool.fetchval("SELECT last_seq FROM chat_sessions") == 1


async def test_concurrent_senders_get_gapless_seqs(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    senders = [as_user(session.a), as_user(session.b)]

    async def send(i: int) -> httpx.Response:
        return await client.post(
            "/api/chat/message", json=body(session, f"m{i}"), headers=senders[i % 2]
        )

    answers = await asyncio.gather(*(send(i) for i in range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    assert sorted(a.json()["seq"] for a in answers) == list(range(1, 21))
    seqs = [r["seq"] for r in await db_pool.fetch("SELECT seq FROM chat_messages ORDER BY seq")]
    assert seqs == list(range(1, 21))
    outbox_seqs = [
        json.loads(r["headers"])["x-seq"]
        for r in await db_pool.fetch("SELECT headers FROM chat_message_outbox ORDER BY id")
    ]
    assert outbox_seqs == list(range(1, 21))  # outbox order follows seq order


async def test_client_id_reused_for_another_session_is_409(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    one = await new_session()
    two = await new_session(b="carol@example.com")
    cid = uuid.uuid4()
    await client.post("/api/chat/message", json=body(one, "x", cid), headers=as_user(one.a))
    answer = await client.post(
        "/api/chat/message", json=body(two, "x", cid), headers=as_user(one.a)
    )
    assert answer.status_code == 409
    assert answer.json()["code"] == "CLIENT_MESSAGE_ID_REUSED"
    assert await counts(db_pool) == (1, 1)


@pytest.mark.parametrize(
    ("mutate", "status", "field"),
    [
        (lambda b: {**b, "content": "   "}, 422, "content"),
        (lambda b: {**b, "content": "x" * 4097}, 413, "content"),
        (lambda b: {**b, "content": "é" * 2049}, 413, "content"),
        (lambda b: {**b, "content": 5}, 422, "content"),
        (lambda b: {**b, "clientMessageId": "not-a-uuid"}, 422, "clientMessageId"),
        (lambda b: {**b, "sessionId": "nope"}, 422, "sessionId"),
        (lambda b: {**b, "extra": True}, 422, "extra"),
        (lambda b: {k: v for k, v in b.items() if k != "content"}, 422, "content"),
        (lambda b: {k: v for k, v in b.items() if k != "clientMessageId"}, 422, "clientMessageId"),
    ],
)
async def test_bad_input_is_refused_and_stores_nothing(
    client: httpx.AsyncClient,
    new_session: SessionFactory,
    as_user: Headers,
    db_pool: asyncpg.Pool,
    mutate: Callable[[dict[str, Any]], dict[str, Any]],
    status: int,
    field: str,
) -> None:
    session = await new_session()
    answer = await client.post(
        "/api/chat/message", json=mutate(body(session)), headers=as_user(session.a)
    )
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["field"] == field
    assert await counts(db_pool) == (0, 0)


async def test_non_json_and_malformed_bodies(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers
) -> None:
    session = await new_session()
    headers = {**as_user(session.a), "content-type": "application/json"}
    broken = await client.post("/api/chat/message", content=b'{"sessionId": ', headers=headers)
    invalid_utf8 = await client.post(
        "/api/chat/message", content=b'{"content":"\xff"}', headers=headers
    )
    assert broken.status_code == 400
    assert invalid_utf8.status_code == 400


async def test_who_may_send(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    outsider = await client.post(
        "/api/chat/message", json=body(session), headers=as_user("eve@x.io")
    )
    assert outsider.status_code == 403
    assert outsider.json()["code"] == "NOT_PARTICIPANT"
    unknown = await client.post(
        "/api/chat/message",
        json={**body(session), "sessionId": str(uuid.uuid4())},
        headers=as_user(session.a),
    )
    assert unknown.status_code == 404
    anonymous = await client.post("/api/chat/message", json=body(session))
    assert anonymous.status_code == 401
    assert await counts(db_pool) == (0, 0)


async def test_rate_limit_and_duplicate_flood(
    settings_factory: Any, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    from asgi_lifespan import LifespanManager

    from message_svc.app import create_app

    session = await new_session()
    app = create_app(
        settings_factory(send_burst=3, send_rate_per_second=0.01, duplicate_content_limit=2)
    )
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://m"
        ) as client,
    ):
        headers = as_user(session.a)
        same = [
            await client.post("/api/chat/message", json=body(session, "spam"), headers=headers)
            for _ in range(3)
        ]
        assert [a.status_code for a in same] == [200, 200, 429]
        assert same[2].json()["code"] == "DUPLICATE_CONTENT"
        third = await client.post("/api/chat/message", json=body(session, "other"), headers=headers)
        assert third.status_code == 200
        limited = await client.post(
            "/api/chat/message", json=body(session, "more"), headers=headers
        )
        assert limited.status_code == 429
        assert limited.json()["code"] == "SEND_RATE_LIMITED"
        assert int(limited.headers["Retry-After"]) >= 1
        # the other participant is not affected
        peer = await client.post(
            "/api/chat/message", json=body(session, "hey"), headers=as_user(session.b)
        )
        assert peer.status_code == 200
    assert await counts(db_pool) == (4, 4)


async def test_a_batch_whose_statement_fails_writes_nothing(
    db_pool: asyncpg.Pool, new_session: SessionFactory
) -> None:
    """The seqs, the messages and their outbox rows of a batch are one statement: when one
    outbox row cannot be written, no message of the batch is, and no seq is used up."""
    import dataclasses

    from message_svc import repository

    from .test_group_commit import drafts_for

    session = await new_session()
    good, other = await drafts_for(db_pool, session, 2)
    broken = dataclasses.replace(
        other,
        event=dataclasses.replace(
            other.event,
            entry=dataclasses.replace(other.event.entry, routing_key=None),  # type: ignore[arg-type]
        ),
    )
    async with db_pool.acquire() as conn:
        with pytest.raises(asyncpg.NotNullViolationError):
            await repository.insert_batch(conn, [good, broken])
    assert await counts(db_pool) == (0, 0)
    assert await db_pool.fetchval("SELECT last_seq FROM chat_sessions") == 0


async def test_the_outbox_row_carries_the_stored_seq(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, new_session: SessionFactory, as_user: Headers
) -> None:
    """The database fills the seq it allocated into the queued event's body and header."""
    session = await new_session()
    sent = []
    for text in ("one", "two", "three"):
        answer = await client.post(
            "/api/chat/message", json=body(session, text), headers=as_user(session.a)
        )
        assert answer.status_code == 200
        sent.append(answer.json())
    rows = await db_pool.fetch(
        "SELECT headers, payload FROM chat_message_outbox WHERE event_type = 'message' ORDER BY id"
    )
    assert [json.loads(r["payload"]) for r in rows] == [
        {**m, "delivered": False, "seen": False} for m in sent
    ]
    assert [json.loads(r["headers"])["x-seq"] for r in rows] == [1, 2, 3]


async def test_a_committed_send_wakes_the_relays(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, database_url: str
) -> None:
    listener = await asyncpg.connect(database_url)
    woken = asyncio.Event()
    await listener.add_listener("chat_outbox", lambda *_: woken.set())
    try:
        session = await new_session()
        answer = await client.post(
            "/api/chat/message", json=body(session), headers=as_user(session.a)
        )
        assert answer.status_code == 200
        await asyncio.wait_for(woken.wait(), 5)
    finally:
        await listener.close()
