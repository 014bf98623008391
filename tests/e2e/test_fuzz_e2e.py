"""Odd values in every query parameter and JSON body, over REST and STOMP, through the
gateway: non-ASCII digits, numbers too large for any column, nesting deeper than any parser's
stack. Each gets a 4xx problem or a STOMP error, never a 500 or an "internal error"; the stack
goes on serving, and no service logs a traceback for any of it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat_testing.stomp import StompClient

from .conftest import Chat, Stack, open_chat

pytestmark = pytest.mark.e2e

ODD_NUMBERS = [
    "²",  # a superscript digit: str.isdigit() is true, int() refuses it
    "١٢",  # Arabic-Indic digits: int() takes them, the contract does not
    "9" * 5000,  # longer than int() converts by default
    "-1",
    "1e3",
    " 5",
    "0x10",
    "",
]
DEEP = "[" * 100_000 + "]" * 100_000  # 200 KB: within REST body limits
DEEP_FRAME = "[" * 5_000 + "]" * 5_000  # 10 KB: within a STOMP frame's limits; past msgspec's


def deep_in(field: str, deep: str = DEEP) -> str:
    return '{"' + field + '":' + deep + "}"


@pytest.fixture(scope="module")
def chat(stack: Stack) -> Chat:
    return open_chat(stack, "fuzz")


def _log_sizes(stack: Stack) -> dict[Path, int]:
    return {p: p.stat().st_size for p in (stack.run_dir / "logs").glob("*.log")}


@pytest.fixture(scope="module")
def no_tracebacks(stack: Stack) -> Iterator[None]:
    """The services' logs grow by no traceback while this module runs."""
    before = _log_sizes(stack)
    yield
    for path in _log_sizes(stack):
        with path.open("rb") as log:
            log.seek(before.get(path, 0))
            added = log.read().decode("utf-8", "replace")
        assert "Traceback" not in added, f"{path.name}: {added[-2000:]}"


def _problem(answer: httpx.Response) -> None:
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"]


HISTORY = "/api/chat/{id}/history"
SESSIONS = "/api/chat/sessions"
QUERIES = [
    *((HISTORY, name, value) for name in ("limit", "before", "after") for value in ODD_NUMBERS),
    *((SESSIONS, "limit", value) for value in ODD_NUMBERS),
    *((SESSIONS, "before", value) for value in ["²", "x" * 5000, "", "a|b"]),  # not a cursor
]


@pytest.mark.parametrize(("path", "name", "value"), QUERIES)
def test_odd_query_parameters_are_4xx(
    stack: Stack, chat: Chat, no_tracebacks: None, path: str, name: str, value: str
) -> None:
    answer = httpx.get(
        stack.gateway + path.format(id=chat.id),
        params={name: value},
        headers={"Authorization": f"Bearer {chat.alice_token}"},
        timeout=10,
    )
    _problem(answer)


def _bodies(chat: Chat) -> list[tuple[str, str]]:
    """(path, body) pairs for every JSON route: deep nesting at the root and in each field,
    huge and non-ASCII numbers where a seq goes."""
    sid = chat.id
    routes = {
        "/api/chat/init": ["toEmail", "intent", "fromEmail"],
        "/api/chat/message": ["sessionId", "content", "clientMessageId"],
        "/api/chat/messages": ["messages"],
        f"/api/chat/{sid}/read": ["upToSeq"],
        f"/api/chat/{sid}/delivered": ["upToSeq"],
    }
    pairs = [(path, DEEP) for path in routes]
    pairs += [(path, deep_in(field)) for path, fields in routes.items() for field in fields]
    for path in (f"/api/chat/{sid}/read", f"/api/chat/{sid}/delivered"):
        pairs += [
            (path, '{"upToSeq": ' + "9" * 5000 + "}"),
            (path, '{"upToSeq": 1e400}'),
            (path, '{"upToSeq": "١٢"}'),
            (path, '{"upToSeq": -1}'),
        ]
    return pairs


def test_odd_json_bodies_are_4xx(stack: Stack, chat: Chat, no_tracebacks: None) -> None:
    with httpx.Client(timeout=10) as http:
        for path, body in _bodies(chat):
            answer = http.post(
                f"{stack.gateway}{path}",
                content=body.encode(),
                headers={
                    "Authorization": f"Bearer {chat.alice_token}",
                    "Content-Type": "application/json",
                },
            )
            _problem(answer)
    with stack.api(chat.alice) as api:
        assert api.get(f"/api/chat/{chat.id}/history").json()["messages"] == []


async def test_odd_stomp_bodies_and_headers_get_errors_not_internal_ones(
    stack: Stack, chat: Chat, no_tracebacks: None
) -> None:
    url = stack.gateway.replace("http://", "ws://") + "/ws"
    client = await StompClient.open(url, headers=(("passcode", chat.alice_token),))
    try:
        await client.subscribe("/user/queue/error", ("receipt", "ready"))
        assert (await client.next_frame()).command == "RECEIPT"
        odd = [
            ("/app/chat.send", DEEP_FRAME),
            ("/app/chat.send", deep_in("clientMessageId", DEEP_FRAME)),
            ("/app/chat.send", deep_in("extra", DEEP_FRAME)),
            ("/app/chat.typing", DEEP_FRAME),
            ("/app/chat.read", deep_in("upToSeq", DEEP_FRAME)),
            ("/app/chat.read", '{"sessionId": "' + chat.id + '", "upToSeq": ' + "9" * 5000 + "}"),
            ("/app/chat.read", '{"sessionId": "' + chat.id + '", "upToSeq": "²"}'),
        ]
        for i, (destination, body) in enumerate(odd):
            await client.send(destination, body.encode(), ("receipt", f"odd-{i}"))
            frame = await client.next_frame()
            assert frame.command == "MESSAGE", (destination, frame.command, frame.header("message"))
            assert frame.header("receipt-id") == f"odd-{i}"
            assert json.loads(frame.body)["code"] == "INVALID_INPUT"
    finally:
        await client.close()
    for value in ["²", "9" * 5000, "-1", "١٢"]:
        refused = await StompClient.open(url, headers=(("passcode", chat.alice_token),))
        try:
            await refused.subscribe(
                f"/topic/session.{chat.id}", ("x-resume-after-seq", value), ("receipt", "r")
            )
            frame = await refused.next_frame()
            assert frame.command == "ERROR", value
            assert "internal" not in (frame.header("message") or ""), value
        finally:
            await refused.close()
    # the stack goes on: a normal send still works
    message = {"sessionId": chat.id, "content": "still here", "clientMessageId": str(uuid.uuid4())}
    with stack.api(chat.alice) as api:
        assert api.post("/api/chat/message", json=message).status_code == 200
