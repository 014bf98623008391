"""POST /api/chat/messages: up to 100 sends in one request, each answered on its own."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from .conftest import ChatSession, SessionFactory, serving

Headers = Callable[[str], dict[str, str]]


def item(session: ChatSession, content: str, cid: uuid.UUID | None = None) -> dict[str, str]:
    return {
        "sessionId": str(session.id),
        "content": content,
        "clientMessageId": str(cid or uuid.uuid4()),
    }


async def test_a_hundred_items_with_successes_replays_and_failures_in_request_order(
    client: httpx.AsyncClient, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    mine = await new_session()
    theirs = await new_session(a="eve@example.com", b="frank@example.com")
    other = await new_session(b="carol@example.com")  # Alice's too
    earlier = uuid.uuid4()
    first = await client.post(
        "/api/chat/message", json=item(mine, "before", earlier), headers=as_user(mine.a)
    )
    assert first.status_code == 200
    items: list[Any] = [item(mine, f"n{i}") for i in range(100)]
    items[3] = item(mine, "before", earlier)  # a replay of a stored message
    items[10] = item(mine, "   ")  # blank
    items[20] = item(theirs, "let me in")  # not a participant
    items[30] = {**item(mine, "x"), "clientMessageId": "not-a-uuid"}  # invalid item
    items[40] = item(mine, "x" * 5000)  # too large
    repeated = uuid.uuid4()
    items[50] = item(mine, "same", repeated)
    items[51] = item(mine, "same", repeated)  # a replay inside the request
    items[60] = item(other, "elsewhere", earlier)  # the stored id, another session
    answer = await client.post(
        "/api/chat/messages", json={"messages": items}, headers=as_user(mine.a)
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["index"] for r in results] == list(range(100))
    statuses = {r["index"]: r["status"] for r in results if r["status"] != 200}
    assert statuses == {10: 422, 20: 403, 30: 422, 40: 413, 60: 409}
    assert results[10]["problem"]["code"] == "CONTENT_BLANK"
    assert results[20]["problem"]["code"] == "NOT_PARTICIPANT"
    assert results[30]["problem"]["field"] == "clientMessageId"
    assert results[60]["problem"]["code"] == "CLIENT_MESSAGE_ID_REUSED"
    assert results[3]["replayed"] is True
    assert results[3]["message"]["messageId"] == first.json()["messageId"]
    assert results[51]["replayed"] is True
    assert results[51]["message"]["messageId"] == results[50]["message"]["messageId"]
    stored = [r for r in results if r["status"] == 200 and not r.get("replayed")]
    assert len(stored) == 100 - 5 - 2
    # stored in request order: seqs follow the items' order, gapless after the first message
    assert [r["message"]["seq"] for r in stored] == list(range(2, 2 + len(stored)))
    assert await db_pool.fetchval("SELECT count(*) FROM chat_messages") == 1 + len(stored)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"messages": []}, 422, "messages"),
        ({"messages": [{}] * 101}, 422, "messages"),
        ({}, 422, "messages"),
        ({"messages": [{}], "extra": 1}, 422, "extra"),
        ([1, 2], 422, None),
    ],
)
async def test_a_malformed_request_as_a_whole_is_refused_and_stores_nothing(
    client: httpx.AsyncClient,
    as_user: Headers,
    db_pool: asyncpg.Pool,
    body: Any,
    status: int,
    field: str | None,
) -> None:
    answer = await client.post(
        "/api/chat/messages", json=body, headers=as_user("alice@example.com")
    )
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json().get("field") == field
    assert await db_pool.fetchval("SELECT count(*) FROM chat_messages") == 0


async def test_not_json_is_400(client: httpx.AsyncClient, as_user: Headers) -> None:
    answer = await client.post(
        "/api/chat/messages",
        content=b"{nope",
        headers={**as_user("alice@example.com"), "content-type": "application/json"},
    )
    assert answer.status_code == 400


async def test_each_item_counts_against_the_send_limits(
    settings_factory: Any, new_session: SessionFactory, as_user: Headers, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    async with serving(settings_factory(send_burst=5, send_rate_per_second=0.01)) as served:
        answer = await served.client.post(
            "/api/chat/messages",
            json={"messages": [item(session, f"m{i}") for i in range(8)]},
            headers=as_user(session.a),
        )
    results = answer.json()["results"]
    assert [r["status"] for r in results].count(200) == 5
    assert [r["status"] for r in results].count(429) == 3
    assert {r["problem"]["code"] for r in results if r["status"] == 429} == {"SEND_RATE_LIMITED"}
    assert await db_pool.fetchval("SELECT count(*) FROM chat_messages") == 5


async def test_the_bulk_send_is_in_the_api_document(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/api/chat/messages"]["post"]
    body = operation["requestBody"]["content"]["application/json"]
    assert len(body["example"]["messages"]) == 2
    assert operation["responses"]["200"]["content"]["application/json"]["example"]["results"]
