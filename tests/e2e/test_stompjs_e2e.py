"""@stomp/stompjs under Node.js, unmodified, through the gateway of the whole stack (and, for
the cross-edge case, straight to a second ws-edge instance). tests/node/chat-e2e.mjs runs one
case per call and prints what it observed as one JSON line; the assertions are here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Stack, open_chat, second_edge
from .node import run_case

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def edge2_ws_url(stack: Stack) -> Iterator[str]:
    with second_edge(stack) as port:
        yield f"ws://127.0.0.1:{port}/ws"


@pytest.fixture
def chat_env(stack: Stack) -> dict[str, str]:
    """A fresh session between two new users, and the environment the script reads."""
    chat = open_chat(stack, "js")
    return {
        "WS_URL": stack.gateway.replace("http://", "ws://") + "/ws",
        "GATEWAY_URL": stack.gateway,
        "SESSION_ID": chat.id,
        "ALICE_TOKEN": chat.alice_token,
        "BOB_TOKEN": chat.bob_token,
    }


def test_stompjs_sends_with_receipts_after_the_commit(
    node_ready: Path, chat_env: dict[str, str]
) -> None:
    result = run_case(node_ready, "send", chat_env)
    assert result["version"] == "1.2"
    assert min(int(v) for v in result["heartBeat"].split(",")) > 0
    assert len(result["sent"]) == 3
    assert result["committedAtReceipt"] == [True, True, True]
    assert result["topic"] == result["sent"]
    assert result["queue"] == result["sent"]
    assert result["ack"] == result["sent"]
    assert result["seqs"] == [1, 2, 3]
    assert result["headers"] == "message,application/json"


def test_stompjs_receives_a_message_sent_over_rest(
    node_ready: Path, chat_env: dict[str, str]
) -> None:
    result = run_case(node_ready, "rest", chat_env)
    sent = result["sent"]
    assert result["topic"] == {
        "messageId": sent["messageId"],
        "content": "hello from REST",
        "seq": sent["seq"],
        "event": "message",
        "sessionHeader": chat_env["SESSION_ID"],
        "destination": f"/topic/session.{chat_env['SESSION_ID']}",
    }
    assert result["queue"] == {
        "messageId": sent["messageId"],
        "destination": "/user/queue/messages",
    }


def test_stompjs_resumes_after_a_disconnect_without_gap_or_duplicate(
    node_ready: Path, chat_env: dict[str, str]
) -> None:
    result = run_case(node_ready, "resume", chat_env)
    last = result["lastSeen"]
    assert result["resumed"] == list(range(last + 1, last + 11))  # every one, once, in order
    assert result["contents"] == [f"m{i}" for i in range(2, 12)]
    assert len(set(result["messageIds"])) == 10


def test_stompjs_subscribe_of_a_non_participant_gets_an_error_frame(
    stack: Stack, node_ready: Path, chat_env: dict[str, str]
) -> None:
    eve = stack.token(f"js.eve.{uuid.uuid4().hex[:6]}@example.com")
    result = run_case(node_ready, "refused", {**chat_env, "EVE_TOKEN": eve})
    [error] = result["errors"]
    assert error["command"] == "ERROR"
    assert "participant" in error["message"]
    assert result["receipted"] is False
    assert "messages" not in result


def test_stompjs_send_through_one_edge_reaches_a_client_of_another(
    node_ready: Path, chat_env: dict[str, str], edge2_ws_url: str
) -> None:
    result = run_case(node_ready, "edges", {**chat_env, "EDGE2_URL": edge2_ws_url})
    assert result["bobTopic"] == [result["sent"]]
    assert result["bobQueue"] == [result["sent"]]
    assert result["aliceTopic"] == [result["sent"], result["reply"]]
