"""POST /api/chat/message through the gateway's grouped sends, against a stand-in of
message-svc on a real socket that records each request and answers as scripted: concurrent
sends go together, each caller gets the answer its single request would have had, a body that
is not JSON is forwarded as before, and a failing upstream fails the sends as a forward would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chat_testing.waiting import eventually

from .loopback import never_answers, raw_server
from .test_gateway_proxy import free_port, gateway_factory, serving_app, silent_server

__all__ = ["gateway_factory"]  # the fixture, shared with the forwarding tests

MESSAGE = {"messageId": "m-1", "seq": 1, "content": "hi"}
PROBLEM_429 = {"type": "t", "title": "Too many", "status": 429, "detail": "slow down", "code": "X"}
PROBLEM_401 = {
    "type": "t",
    "title": "No",
    "status": 401,
    "detail": "expired",
    "code": "TOKEN_EXPIRED",
}


class MessageSvc:
    """Records grouped requests; answers each message by its content: "ok", "again" (a
    replay), "slow" (429, retry after 7 s); with ``refuse_all``, each group's token (401)."""

    def __init__(self) -> None:
        self.grouped: list[list[dict[str, Any]]] = []
        self.single: list[bytes] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.whole_status = 200
        self.refuse_all = False

    async def sends(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.grouped.append(body["groups"])
        await self.gate.wait()
        if self.whole_status != 200:
            return JSONResponse({"code": "BOOM"}, status_code=self.whole_status)
        return JSONResponse({"groups": [self._group(g) for g in body["groups"]]})

    def _group(self, group: dict[str, Any]) -> dict[str, Any]:
        if self.refuse_all:
            return {"status": 401, "problem": PROBLEM_401}
        results = []
        for index, message in enumerate(group["messages"]):
            content = message.get("content")
            if content == "slow":
                results.append(
                    {"index": index, "status": 429, "problem": PROBLEM_429, "retryAfter": 7}
                )
            else:
                results.append(
                    {
                        "index": index,
                        "status": 200,
                        "message": MESSAGE,
                        "replayed": content == "again",
                    }
                )
        return {"status": 200, "results": results}

    async def message(self, request: Request) -> Response:
        self.single.append(await request.body())
        return JSONResponse({"code": "MALFORMED_BODY"}, status_code=400)


@contextlib.asynccontextmanager
async def serving(svc: MessageSvc, port: int) -> AsyncIterator[None]:
    app = Starlette(
        routes=[
            Route("/internal/sends", svc.sends, methods=["POST"]),
            Route("/api/chat/message", svc.message, methods=["POST"]),
        ]
    )
    async with serving_app(app, port):
        yield


def pending() -> float:
    return REGISTRY.get_sample_value("chat_gateway_sends_pending") or 0.0


def body(content: str) -> dict[str, str]:
    return {"sessionId": "s", "content": content, "clientMessageId": "c"}


async def test_concurrent_sends_go_together_each_as_its_callers_group(
    gateway_factory: Any, make_token: Any
) -> None:
    svc, port = MessageSvc(), free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = gateway_factory(url, url, send_requests_in_flight=1, upstream_timeout_seconds=10)
    async with serving(svc, port), gateway as gw:  # a slow machine's pause is no upstream timeout
        svc.gate.clear()
        users = [f"u{i}@example.com" for i in range(4)]
        tokens = {u: make_token(u) for u in users}

        async def send(user: str, content: str) -> Any:
            headers = {"Authorization": f"Bearer {tokens[user]}", "X-Request-Id": f"req-{user}"}
            return await gw.post("/api/chat/message", json=body(content), headers=headers)

        pending_before = pending()
        first = asyncio.create_task(send(users[0], "ok"))
        await eventually(lambda: svc.grouped, what="the first request is out")
        contents = ("ok", "again", "slow")
        rest = [asyncio.create_task(send(u, c)) for u, c in zip(users[1:], contents, strict=True)]
        # the gauge counts the one out and the three waiting behind it
        await eventually(lambda: pending() - pending_before == 4, what="three sends waiting")
        assert len(svc.grouped) == 1  # the one request out holds the others back
        svc.gate.set()
        answers = await asyncio.gather(first, *rest)
        assert pending() == pending_before  # answered: none held any more
    assert [len(r) for r in svc.grouped] == [1, 3]
    assert [g["token"] for g in svc.grouped[1]] == [tokens[u] for u in users[1:]]
    assert [g["requestId"] for g in svc.grouped[1]] == [f"req-{u}" for u in users[1:]]
    assert [g["messages"] for g in svc.grouped[1]] == [[body(c)] for c in ("ok", "again", "slow")]
    ok, also_ok, replayed, slow = answers
    assert (ok.status_code, ok.json()) == (200, MESSAGE)
    assert ok.headers["content-type"] == "application/json"
    assert "idempotent-replayed" not in also_ok.headers
    assert replayed.headers["idempotent-replayed"] == "true"
    assert slow.status_code == 429
    assert slow.headers["retry-after"] == "7"
    assert slow.headers["content-type"] == "application/problem+json"
    assert slow.json() == PROBLEM_429
    assert {a.headers["x-request-id"] for a in answers[1:]} == {f"req-{u}" for u in users[1:]}


async def test_a_refused_group_answers_its_problem_with_its_headers(
    gateway_factory: Any, make_token: Any
) -> None:
    """The gateway verified the token, but message-svc may still refuse it (it expired on the
    way): the 401 comes back as message-svc would have answered the single request."""
    svc, port = MessageSvc(), free_port()
    svc.refuse_all = True
    url = f"http://127.0.0.1:{port}"
    async with serving(svc, port), gateway_factory(url, url) as gw:
        answer = await gw.post(
            "/api/chat/message",
            json=body("ok"),
            headers={"Authorization": f"Bearer {make_token()}"},
        )
    assert answer.status_code == 401
    assert answer.json() == PROBLEM_401
    assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("raw", [b"{not json", b'{"a": 1} trailing', b"[" * 100_000])
async def test_a_body_that_is_not_one_json_document_is_forwarded_as_before(
    gateway_factory: Any, make_token: Any, raw: bytes
) -> None:
    svc, port = MessageSvc(), free_port()
    url = f"http://127.0.0.1:{port}"
    async with (
        serving(svc, port),
        gateway_factory(url, url, max_body_bytes=200_000) as gw,
    ):
        answer = await gw.post(
            "/api/chat/message",
            content=raw,
            headers={
                "Authorization": f"Bearer {make_token()}",
                "Content-Type": "application/json",
            },
        )
    assert answer.status_code == 400
    assert svc.single == [raw]
    assert svc.grouped == []


async def test_a_failing_grouped_request_fails_each_send_as_a_forward_would(
    gateway_factory: Any, make_token: Any
) -> None:
    svc, port, down, slow = MessageSvc(), free_port(), free_port(), free_port()
    headers = {"Authorization": f"Bearer {make_token()}"}
    async with serving(svc, port), silent_server(slow):
        svc.whole_status = 500
        async with gateway_factory(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}") as gw:
            failed = await gw.post("/api/chat/message", json=body("ok"), headers=headers)
        async with gateway_factory(f"http://127.0.0.1:{down}", f"http://127.0.0.1:{down}") as gw:
            refused = await gw.post("/api/chat/message", json=body("ok"), headers=headers)
        async with gateway_factory(
            f"http://127.0.0.1:{slow}", f"http://127.0.0.1:{slow}", upstream_timeout_seconds=0.5
        ) as gw:
            started = time.monotonic()
            hanging = await gw.post("/api/chat/message", json=body("ok"), headers=headers)
            waited = time.monotonic() - started
    assert (failed.status_code, failed.json()) == (500, {"code": "BOOM"})
    assert refused.status_code == 503
    assert refused.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert hanging.status_code == 504
    assert hanging.json()["code"] == "UPSTREAM_TIMEOUT"
    assert waited < 3  # bounded: the 0.5 s upstream timeout, not a hang


async def test_grouping_can_be_switched_off(gateway_factory: Any, make_token: Any) -> None:
    svc, port = MessageSvc(), free_port()
    url = f"http://127.0.0.1:{port}"
    async with serving(svc, port), gateway_factory(url, url, send_requests_in_flight=0) as gw:
        await gw.post(
            "/api/chat/message",
            json=body("ok"),
            headers={"Authorization": f"Bearer {make_token()}"},
        )
    assert svc.grouped == []
    assert len(svc.single) == 1


async def test_a_send_waiting_behind_a_hung_request_is_bounded_by_the_same_timeout(
    gateway_factory: Any, make_token: Any
) -> None:
    """With one grouped request out and hung, a second send waits for it: its answer still
    comes within the upstream timeout (2 s here), not after the first one's."""
    headers = {"Authorization": f"Bearer {make_token()}"}
    async with raw_server(never_answers) as slow:
        url = f"http://127.0.0.1:{slow.port}"
        async with gateway_factory(
            url, url, send_requests_in_flight=1, upstream_timeout_seconds=2.0
        ) as gw:
            first = asyncio.create_task(
                gw.post("/api/chat/message", json=body("a"), headers=headers)
            )
            await eventually(lambda: slow.connections, what="the first request is out")
            started = time.monotonic()
            second = await gw.post("/api/chat/message", json=body("b"), headers=headers)
            waited = time.monotonic() - started
            assert (await first).status_code == 504
    assert second.status_code == 504
    assert second.json()["code"] == "UPSTREAM_TIMEOUT"
    # A functional bound, the mechanism under test: its own 2 s timeout (about 2 s), not the
    # rest of the first one's and then its own (about 4 s).
    assert waited < 2.0 + 1.5
