"""Which edge serves a SockJS session (gateway.edges): the same one from every gateway, an even
spread, only the sessions a new edge wins move; the directory keeps its last good list."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from gateway.edges import EdgeDirectory, parse_dns, pick, resolve
from gateway.sockjs import session_of

EDGES = ["http://10.0.0.1:8083", "http://10.0.0.2:8083", "http://10.0.0.3:8083"]
SESSIONS = [uuid.uuid4().hex[:8] for _ in range(3000)]


def test_every_gateway_picks_the_same_edge_whatever_the_list_order() -> None:
    for session in SESSIONS[:200]:
        assert pick(session, EDGES) == pick(session, list(reversed(EDGES)))


def test_sessions_spread_evenly() -> None:
    shares = Counter(pick(session, EDGES) for session in SESSIONS)
    assert set(shares) == set(EDGES)
    for count in shares.values():
        assert 800 < count < 1200  # a third of 3,000, give or take


def test_a_new_edge_takes_only_the_sessions_it_wins() -> None:
    before = {session: pick(session, EDGES) for session in SESSIONS}
    grown = [*EDGES, "http://10.0.0.4:8083"]
    moved = {s for s in SESSIONS if pick(s, grown) != before[s]}
    assert all(pick(s, grown) == grown[-1] for s in moved)
    assert 500 < len(moved) < 1000  # about a quarter


def test_the_session_id_is_read_from_a_transport_path_only() -> None:
    assert session_of("/ws/123/abcdef/xhr_streaming") == "abcdef"
    assert session_of("/ws/123/abcdef/xhr_send") == "abcdef"
    assert session_of("/ws/info") is None
    assert session_of("/ws/") is None
    assert session_of("/ws/123//xhr") is None


def test_dns_targets_are_host_and_port() -> None:
    assert parse_dns("ws-edge-pods.chat.svc:8083") == ("ws-edge-pods.chat.svc", 8083)
    for bad in ("ws-edge-pods", ":8083", "host:port"):
        with pytest.raises(ValueError, match="host:port"):
            parse_dns(bad)


def test_without_edges_every_session_goes_to_the_fallback() -> None:
    directory = EdgeDirectory("http://ws-edge:8083")
    assert directory.for_session("abc") == "http://ws-edge:8083"
    listed = EdgeDirectory("http://ws-edge:8083", EDGES)
    assert listed.for_session("abc") == pick("abc", EDGES)
    assert listed.for_session(None) == "http://ws-edge:8083"  # /ws/info: any edge


def test_the_directory_keeps_its_last_good_answer() -> None:
    answers: list[list[str] | OSError] = [EDGES, OSError("no DNS"), [], EDGES[:2]]

    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("ws-edge-pods", 8083)
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    async def scenario() -> list[list[str]]:
        directory = EdgeDirectory("http://ws-edge:8083", dns="ws-edge-pods:8083", resolver=resolver)
        seen = []
        for _ in range(4):
            await directory.refresh()
            seen.append(directory.edges)
        return seen

    assert asyncio.run(scenario()) == [EDGES, EDGES, EDGES, EDGES[:2]]


def test_a_name_resolves_to_edge_urls() -> None:
    urls = asyncio.run(resolve("localhost", 8083))
    assert "http://127.0.0.1:8083" in urls
