"""SockJS, as browsers behind a proxy that blocks WebSockets use it: sockjs-client 1.6 and
@stomp/stompjs, unmodified, under Node.js, each run forced onto one transport (websocket,
xhr-streaming, xhr-polling, eventsource) through the gateway's ``/ws`` and on the direct edge
route. tests/node/chat-e2e.mjs runs the cases (the same ones as over a raw WebSocket), the
four transports of a case at once; the assertions are here."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import ROOT, Stack, open_chat, second_edge
from .node import run_at_once, run_case

pytestmark = pytest.mark.e2e

TRANSPORTS = ("websocket", "xhr-streaming", "xhr-polling", "eventsource")
EDGE_OFFSET = 3  # ws-edge's port in a stack: its port base + 3
MAX_CONNECTIONS_PER_USER = 20  # ws-edge's default, which the test stack keeps


def sockjs_env(stack: Stack, transport: str, *, direct: bool = False) -> dict[str, str]:
    """A fresh session between two new users, and the script's environment for ``transport``
    (through the gateway, or ``direct`` to the edge)."""
    chat = open_chat(stack, "sockjs")
    base = f"http://127.0.0.1:{stack.port_base + EDGE_OFFSET}" if direct else stack.gateway
    return {
        "SOCKJS_TRANSPORT": transport,
        "SOCKJS_URL": f"{base}/ws",
        "GATEWAY_URL": stack.gateway,
        "SESSION_ID": chat.id,
        "ALICE_TOKEN": chat.alice_token,
        "BOB_TOKEN": chat.bob_token,
    }


def each_transport(
    stack: Stack, node: Path, case: str, *, direct: bool = False, **extra: str
) -> dict[str, dict[str, Any]]:
    """``case`` over every transport at once, each in a fresh session."""
    envs = {t: {**sockjs_env(stack, t, direct=direct), **extra} for t in TRANSPORTS}
    return run_at_once(node, case, envs)


def test_sends_with_receipts_over_each_transport(stack: Stack, node_ready: Path) -> None:
    for transport, result in each_transport(stack, node_ready, "send").items():
        assert result["version"] == "1.2", transport
        assert min(int(v) for v in result["heartBeat"].split(",")) > 0, transport
        assert result["committedAtReceipt"] == [True, True, True], transport
        assert result["topic"] == result["queue"] == result["ack"] == result["sent"], transport
        assert result["seqs"] == [1, 2, 3], transport
        assert result["headers"] == "message,application/json", transport


def test_the_direct_edge_route_serves_each_transport(stack: Stack, node_ready: Path) -> None:
    for transport, result in each_transport(stack, node_ready, "send", direct=True).items():
        assert result["topic"] == result["queue"] == result["ack"] == result["sent"], transport


def test_resume_misses_nothing_and_repeats_nothing_over_each_transport(
    stack: Stack, node_ready: Path
) -> None:
    for transport, result in each_transport(stack, node_ready, "resume").items():
        last = result["lastSeen"]
        assert result["resumed"] == list(range(last + 1, last + 11)), transport
        assert result["contents"] == [f"m{i}" for i in range(2, 12)], transport
        assert len(set(result["messageIds"])) == 10, transport


def test_a_non_participant_is_refused_over_each_transport(stack: Stack, node_ready: Path) -> None:
    eve = stack.token(f"sockjs.eve.{uuid.uuid4().hex[:6]}@example.com")
    for transport, result in each_transport(stack, node_ready, "refused", EVE_TOKEN=eve).items():
        [error] = result["errors"]
        assert error["command"] == "ERROR", transport
        assert "participant" in error["message"], transport
        assert result["receipted"] is False, transport
        assert "messages" not in result, transport
        assert result["closeCode"] == 1008, transport


def test_the_token_may_come_in_the_url_over_each_transport(stack: Stack, node_ready: Path) -> None:
    """``?access_token=`` in the SockJS URL (sockjs-client repeats it on every request), and
    nothing in CONNECT."""
    results = each_transport(stack, node_ready, "rest", SOCKJS_QUERY_TOKEN="1")
    for transport, result in results.items():
        assert result["topic"]["messageId"] == result["sent"]["messageId"], transport
        assert result["queue"]["messageId"] == result["sent"]["messageId"], transport


def test_heart_beats_keep_idle_connections_open_over_each_transport(
    stack: Stack, node_ready: Path
) -> None:
    """Longer than either side waits for a silent peer (twice the 10 s heart-beat: the edge
    and stompjs drop a peer silent for 20 s) with no traffic but heart-beats: no connection
    closes, so heart-beats went both ways over every transport; then a send still goes
    through."""
    for transport, result in each_transport(stack, node_ready, "idle", IDLE_MS="25000").items():
        assert result["closedWhileIdle"] == 0, transport
        assert result["received"] == [result["sent"]], transport


def test_a_user_past_the_connection_limit_is_refused(stack: Stack, node_ready: Path) -> None:
    env = {
        **sockjs_env(stack, "xhr-streaming"),
        "MAX_CONNECTIONS": str(MAX_CONNECTIONS_PER_USER),
    }
    result = run_case(node_ready, "limit", env)
    assert result["opened"] == MAX_CONNECTIONS_PER_USER
    assert "too many open connections" in result["extra"]


@pytest.mark.parametrize("direct", [False, True], ids=["gateway", "edge"])
def test_an_origin_not_allowed_is_refused(stack: Stack, direct: bool) -> None:
    base = f"http://127.0.0.1:{stack.port_base + EDGE_OFFSET}" if direct else stack.gateway
    refused = httpx.post(
        f"{base}/ws/000/{uuid.uuid4().hex[:8]}/xhr_streaming",
        headers={"Origin": "http://elsewhere.example"},
        timeout=5,
    )
    assert refused.status_code == 403
    allowed = httpx.get(f"{base}/ws/info", headers={"Origin": stack.gateway}, timeout=5)
    assert allowed.status_code == 200
    assert allowed.json()["websocket"] is True
    assert allowed.headers["access-control-allow-origin"] == stack.gateway


@contextlib.contextmanager
def gateway_with(stack: Stack, **env: str) -> Iterator[None]:
    """The stack's gateway restarted with ``env`` added; restarted as it was afterwards."""

    def start(extra: dict[str, str]) -> None:
        started = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "stack.py"), "start", "gateway"],
            env={**stack.env, **extra},
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert started.returncode == 0, started.stdout + started.stderr

    stack.stop_service("gateway")
    try:
        start(env)
        yield
    finally:
        stack.stop_service("gateway")
        start({})


def sockjs_sessions(edge_port: int) -> float:
    """SockJS sessions an edge has opened (its chat_ws_sockjs_sessions_total, all transports)."""
    text = httpx.get(f"http://127.0.0.1:{edge_port}/metrics", timeout=5).text
    found = re.findall(r"^chat_ws_sockjs_sessions_total\{[^}]*\} (\S+)$", text, re.MULTILINE)
    return sum(float(value) for value in found)


def test_each_sessions_requests_reach_its_edge_among_several(
    stack: Stack, node_ready: Path
) -> None:
    """A gateway given two edges (SOCKJS_EDGES) spreads SockJS sessions over both, and every
    request of a session (streams or polls, each xhr_send) reaches the edge that holds it: a
    request reaching the other edge would find no session (404) and the case would fail."""
    first = stack.port_base + EDGE_OFFSET
    with second_edge(stack) as second:
        edges = f"http://127.0.0.1:{first},http://127.0.0.1:{second}"
        before = {port: sockjs_sessions(port) for port in (first, second)}
        with gateway_with(stack, SOCKJS_EDGES=edges):
            envs = {
                f"{transport}-{i}": sockjs_env(stack, transport)
                for i in range(2)
                for transport in ("xhr-polling", "xhr-streaming", "eventsource")
            }
            for key, result in run_at_once(node_ready, "send", envs).items():
                assert result["topic"] == result["queue"] == result["sent"], key
        opened = {port: sockjs_sessions(port) - before[port] for port in (first, second)}
    assert sum(opened.values()) == 12  # two users a run
    assert all(count > 0 for count in opened.values()), opened
