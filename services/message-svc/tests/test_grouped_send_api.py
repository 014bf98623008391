"""POST /internal/sends: several senders' messages in one request (ws-edge's way of storing
the SENDs of many connections), each group authenticated by its own token and answered as that
sender's bulk send."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from chat_common.dto import GROUPED_MAX

from .conftest import SessionFactory, serving
from .test_bulk_send_api import item


async def test_each_group_is_its_own_senders_bulk_send(
    client: httpx.AsyncClient, new_session: SessionFactory, make_token: Any, db_pool: asyncpg.Pool
) -> None:
    ab = await new_session()
    cd = await new_session(a="carol@example.com", b="dave@example.com")
    replayed = uuid.uuid4()
    first = await client.post(
        "/api/chat/message",
        json=item(cd, "earlier", replayed),
        headers={"Authorization": f"Bearer {make_token(cd.a)}"},
    )
    assert first.status_code == 200
    groups = [
        {"token": make_token(ab.a), "messages": [item(ab, "a1"), item(ab, "a2")]},
        # Carol: a replay, a message to a session not hers, a new one
        {
            "token": make_token(cd.a),
            "messages": [item(cd, "earlier", replayed), item(ab, "let me in"), item(cd, "c1")],
        },
        {"token": "not-a-token", "messages": [item(ab, "forged")]},
        {"token": make_token(ab.b, ttl=-120), "messages": [item(ab, "late")]},  # expired
        {"token": make_token(ab.b), "messages": [item(ab, "b1"), {"sessionId": "nope"}]},
    ]
    answer = await client.post("/internal/sends", json={"groups": groups})
    assert answer.status_code == 200, answer.text
    alice, carol, forged, expired, bob = answer.json()["groups"]

    assert alice["status"] == 200
    assert [r["message"]["content"] for r in alice["results"]] == ["a1", "a2"]
    assert {r["message"]["senderEmail"] for r in alice["results"]} == {ab.a}

    assert carol["status"] == 200
    assert [r["status"] for r in carol["results"]] == [200, 403, 200]
    assert carol["results"][0]["replayed"] is True
    assert carol["results"][0]["message"]["messageId"] == first.json()["messageId"]
    assert carol["results"][1]["problem"]["code"] == "NOT_PARTICIPANT"
    assert carol["results"][2]["message"]["senderEmail"] == cd.a

    assert forged["status"] == 401
    assert "results" not in forged
    assert forged["problem"]["code"] == "TOKEN_INVALID"
    assert expired["status"] == 401
    assert expired["problem"]["code"] == "TOKEN_EXPIRED"

    assert bob["status"] == 200
    assert [r["status"] for r in bob["results"]] == [200, 422]
    assert bob["results"][0]["message"]["senderEmail"] == ab.b

    rows = await db_pool.fetch("SELECT content, sender_email FROM chat_messages ORDER BY content")
    assert [(r["content"], r["sender_email"]) for r in rows] == [
        ("a1", ab.a),
        ("a2", ab.a),
        ("b1", ab.b),
        ("c1", cd.a),
        ("earlier", cd.a),
    ]
    # one sender's messages keep their order: consecutive seqs in the session
    seqs = [r["message"]["seq"] for r in alice["results"]]
    assert seqs[1] == seqs[0] + 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"groups": []}, "groups"),
        ({"groups": [{"token": "t", "messages": []}]}, "groups[0].messages"),
        ({"groups": [{"messages": [{}]}]}, "groups[0].token"),
        ({"groups": [{"token": "t", "messages": [{}]}], "more": 1}, "more"),
        ({"groups": [{"token": "t", "messages": [{}] * 101}]}, "groups[0].messages"),
        ({"groups": [{"token": "t", "messages": [{}]}] * 101}, "groups"),
        # more than GROUPED_MAX messages in all, each group within its own cap
        ({"groups": [{"token": "t", "messages": [{}] * 100}] * (GROUPED_MAX // 100 + 1)}, "groups"),
    ],
)
async def test_a_malformed_request_as_a_whole_is_refused_and_stores_nothing(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, body: Any, field: str
) -> None:
    answer = await client.post("/internal/sends", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json().get("field") == field
    assert await db_pool.fetchval("SELECT count(*) FROM chat_messages") == 0


async def test_each_group_counts_against_its_own_senders_limits(
    settings_factory: Any, new_session: SessionFactory, make_token: Any, db_pool: asyncpg.Pool
) -> None:
    session = await new_session()
    async with serving(settings_factory(send_burst=3, send_rate_per_second=0.01)) as served:
        answer = await served.client.post(
            "/internal/sends",
            json={
                "groups": [
                    {
                        "token": make_token(email),
                        "messages": [item(session, f"{email[0]}{i}") for i in range(5)],
                    }
                    for email in (session.a, session.b)
                ]
            },
        )
    for group in answer.json()["groups"]:
        assert [r["status"] for r in group["results"]] == [200, 200, 200, 429, 429]
    assert await db_pool.fetchval("SELECT count(*) FROM chat_messages") == 6


async def test_the_route_is_not_in_the_public_api_document(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert "/internal/sends" not in document["paths"]
