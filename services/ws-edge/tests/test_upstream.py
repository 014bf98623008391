"""The edge's calls to session-svc and message-svc against a mock transport: history pages
followed in seq order, membership cached and asked once for concurrent askers."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from chat_common.errors import DependencyUnavailable
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
        page = [s for s in stored if s > after][:limit]
        messages = [{"seq": s, "content": f"m{s}"} for s in reversed(page)]  # newest first
        return httpx.Response(200, json={"sessionId": str(SESSION), "messages": messages})

    got = [
        seq async for seq, _ in upstream(httpx.MockTransport(answer)).history_after("t", SESSION, 7)
    ]
    assert got == list(range(8, 451))
    assert asked == ["7", str(7 + PAGE), str(7 + 2 * PAGE)]


async def test_history_bodies_are_passed_on_as_stored() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = b'{"sessionId":"x","messages":[{"seq":2, "content":"b"},{"seq":1,"content":"a"}]}'
        return httpx.Response(200, content=body)

    pages = [p async for p in upstream(httpx.MockTransport(answer)).history_after("t", SESSION, 0)]
    assert pages == [(1, b'{"seq":1,"content":"a"}'), (2, b'{"seq":2, "content":"b"}')]


async def test_a_bounded_range_asks_only_for_what_it_lacks() -> None:
    stored = list(range(1, 451))
    asked: list[tuple[str, str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        asked.append((params["after"], params["before"], params["limit"]))
        after, before, limit = int(params["after"]), int(params["before"]), int(params["limit"])
        page = [s for s in stored if after < s < before][:limit]
        messages = [{"seq": s} for s in reversed(page)]
        return httpx.Response(200, json={"sessionId": str(SESSION), "messages": messages})

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
