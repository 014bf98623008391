"""The edge's calls to session-svc and message-svc against a mock transport: pages of the
session's events followed in seq order, membership cached and asked once for concurrent
askers."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import msgspec
import pytest

from chat_common.errors import DependencyUnavailable
from ws_edge.answers import Refused, Stored, Unanswered
from ws_edge.commands import DeleteMessage, EditMessage
from ws_edge.upstream import PAGE, Upstream

SESSION = uuid.uuid4()


def membership_body() -> dict[str, object]:
    person = {"profileId": str(uuid.uuid4()), "displayName": "A", "email": "a@x.io"}
    return {"sessionId": str(SESSION), "intent": "dating", "me": person, "peer": person}


def upstream(handler: httpx.MockTransport, clock: list[float] | None = None) -> Upstream:
    now = clock if clock is not None else [0.0]
    client = httpx.AsyncClient(transport=handler)
    return Upstream(client, "http://s", "http://m", clock=lambda: now[0])


async def test_history_pages_are_sorted_and_followed_until_a_short_one() -> None:
    stored = list(range(1, 451))  # seqs 1..450
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params["after"])
        after, limit = int(request.url.params["after"]), int(request.url.params["limit"])
        assert request.url.path == f"/api/chat/{SESSION}/events"
        page = [s for s in stored if s > after][:limit]
        events = [
            {"event": "message", "seq": s, "message": {"seq": s, "content": f"m{s}"}}
            for s in reversed(page)  # the edge sorts what it gets
        ]
        return httpx.Response(200, json={"sessionId": str(SESSION), "events": events})

    got = [
        seq async for seq, _ in upstream(httpx.MockTransport(answer)).history_after("t", SESSION, 7)
    ]
    assert got == list(range(8, 451))
    assert asked == ["7", str(7 + PAGE), str(7 + 2 * PAGE)]


async def test_history_bodies_are_passed_on_as_stored() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = (
            b'{"sessionId":"x","events":[{"event":"edit","seq":3,"change":{"change":"edit",'
            b'"seq":3}},{"event":"message","seq":2,"message":{"seq":2, "content":"b"}},'
            b'{"event":"message","seq":1,"message":{"seq":1,"content":"a"}}]}'
        )
        return httpx.Response(200, content=body)

    pages = [p async for p in upstream(httpx.MockTransport(answer)).history_after("t", SESSION, 0)]
    assert pages == [
        (1, b'{"seq":1,"content":"a"}'),
        (2, b'{"seq":2, "content":"b"}'),
        (3, b'{"change":"edit","seq":3}'),
    ]


async def test_an_event_without_a_body_is_an_unreadable_answer() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"sessionId": "x", "events": [{"event": "x", "seq": 1}]})

    with pytest.raises(DependencyUnavailable):
        async for _ in upstream(httpx.MockTransport(answer)).history_after("t", SESSION, 0):
            pass


async def test_a_bounded_range_asks_only_for_what_it_lacks() -> None:
    stored = list(range(1, 451))
    asked: list[tuple[str, str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        asked.append((params["after"], params["before"], params["limit"]))
        after, before, limit = int(params["after"]), int(params["before"]), int(params["limit"])
        page = [s for s in stored if after < s < before][:limit]
        events = [{"event": "message", "seq": s, "message": {"seq": s}} for s in page]
        return httpx.Response(200, json={"sessionId": str(SESSION), "events": events})

    up = upstream(httpx.MockTransport(answer))
    got = [seq async for seq, _ in up.history_after("t", SESSION, 10, up_to=12)]
    assert got == [11, 12]
    assert asked == [("10", "13", "2")]
    asked.clear()
    got = [seq async for seq, _ in up.history_after("t", SESSION, 0, up_to=300)]
    assert got == list(range(1, 301))
    assert asked == [("0", "301", str(PAGE)), (str(PAGE), "301", "100")]
    assert [s async for s, _ in up.history_after("t", SESSION, 5, up_to=5)] == []
    assert len(asked) == 2  # an empty range asks nothing


async def test_membership_is_asked_once_for_concurrent_askers_and_cached() -> None:
    calls = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        assert request.headers["Authorization"] == "Bearer tok"
        await asyncio.sleep(0.05)
        return httpx.Response(200, json=membership_body())

    clock = [0.0]
    up = upstream(httpx.MockTransport(answer), clock)
    answers = await asyncio.gather(*(up.membership("a@x.io", "tok", SESSION) for _ in range(5)))
    assert calls == 1
    assert all(a is not None and a.session_id == SESSION for a in answers)
    await up.membership("a@x.io", "tok", SESSION)
    assert calls == 1  # cached
    clock[0] = 31.0
    await up.membership("a@x.io", "tok", SESSION)
    assert calls == 2  # a yes lasts 30 s


async def test_refusals_are_cached_briefly_and_failures_not_at_all() -> None:
    statuses = [403, 500, 404]
    calls = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(statuses[min(calls, len(statuses)) - 1], json={})

    clock = [0.0]
    up = upstream(httpx.MockTransport(answer), clock)
    assert await up.membership("e@x.io", "t", SESSION) is None
    assert await up.membership("e@x.io", "t", SESSION) is None
    assert calls == 1
    clock[0] = 6.0  # a no lasts 5 s
    with pytest.raises(DependencyUnavailable):
        await up.membership("e@x.io", "t", SESSION)
    assert await up.membership("e@x.io", "t", SESSION) is None  # the 500 was not cached
    assert calls == 3


async def test_an_unreachable_service_is_a_dependency_error() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(DependencyUnavailable, match="unreachable"):
        await upstream(httpx.MockTransport(answer)).mark("t", SESSION, "read", 3)


async def test_an_edit_and_a_delete_are_asked_with_the_users_token() -> None:
    message = uuid.uuid4()
    asked: list[tuple[str, str, dict[str, object], str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        asked.append((request.method, request.url.path, body, request.headers["authorization"]))
        change = {"change": "edit", "sessionId": str(SESSION), "seq": 8}
        return httpx.Response(200, json=change)

    up = upstream(httpx.MockTransport(answer))
    cid = uuid.uuid4()
    edited = await up.change("tok", EditMessage(SESSION, message, cid, "new text"))
    deleted = await up.change("tok", DeleteMessage(SESSION, message, cid))
    path = f"/api/chat/{SESSION}/messages/{message}"
    assert asked == [
        ("PATCH", path, {"clientMessageId": str(cid), "content": "new text"}, "Bearer tok"),
        ("DELETE", path, {"clientMessageId": str(cid)}, "Bearer tok"),
    ]
    assert isinstance(edited, Stored)
    assert (edited.session, edited.seq) == (str(SESSION), 8)
    assert isinstance(deleted, Stored)


async def test_an_encrypted_edit_passes_its_envelope_on_unchanged() -> None:
    envelope = {
        "alg": "X25519-HKDF-SHA256+A256GCM",
        "senderKeyId": "laptop",
        "recipients": [{"email": "b@example.com", "keyId": "phone", "wrappedKey": "q83v"}],
        "ciphertext": "c2VjcmV0",
    }
    asked: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(json.loads(request.content))
        return httpx.Response(200, json={"change": "edit", "sessionId": str(SESSION), "seq": 3})

    cid, message = uuid.uuid4(), uuid.uuid4()
    body = {
        "sessionId": str(SESSION),
        "messageId": str(message),
        "clientMessageId": str(cid),
        "encrypted": envelope,
    }
    change = msgspec.json.decode(json.dumps(body).encode(), type=EditMessage)
    edited = await upstream(httpx.MockTransport(answer)).change("tok", change)
    assert isinstance(edited, Stored)
    assert asked == [{"clientMessageId": str(cid), "encrypted": envelope}]


@pytest.mark.parametrize(
    ("status", "expected"),
    [(403, Refused("NOT_MESSAGE_SENDER", "only the sender")), (503, None), (None, None)],
)
async def test_a_refused_or_unanswered_change(status: int | None, expected: Refused | None) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if status is None:
            raise httpx.ConnectError("down")
        problem = {"code": "NOT_MESSAGE_SENDER", "detail": "only the sender"}
        return httpx.Response(status, json=problem)

    got = await upstream(httpx.MockTransport(answer)).change(
        "tok", DeleteMessage(SESSION, uuid.uuid4(), uuid.uuid4())
    )
    if expected is None:
        assert isinstance(got, Unanswered)
    else:
        assert got == expected
