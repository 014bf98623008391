"""The Origin check at the edge's handshake (the rule itself: chat_common.handshake, tested in
libs/common): an Origin on the allow-list passes, so does a same-origin request, and any other
Origin is refused with 403."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

ALLOWED = ("http://app.example",)


async def test_the_edge_admits_the_list_and_same_origin_and_refuses_the_rest(world: Any) -> None:
    edge = await world.edge(allowed_origins=ALLOWED)
    port = edge.edge_server.settings.port
    url = f"ws://127.0.0.1:{port}/ws"
    for admitted in (ALLOWED[0], f"http://127.0.0.1:{port}"):
        async with connect(url, origin=Origin(admitted)) as socket:
            assert socket.protocol.state.name == "OPEN"
    for refused in ("http://evil.example", f"http://localhost:{port}", "http://127.0.0.1:1"):
        with pytest.raises(InvalidStatus) as answer:
            await connect(url, origin=Origin(refused))
        assert answer.value.response.status_code == 403
        assert answer.value.response.body == b"origin not allowed"


async def test_handshakes_are_limited_per_client_address(world: Any) -> None:
    """What the gateway does for /ws, the edge does too when an Ingress routes /ws to it: a
    flood of handshakes from one address is 429 with Retry-After; behind a trusted proxy the
    address is X-Forwarded-For's first hop, so other clients are not held back."""
    edge = await world.edge(
        connect_ip_burst=3, connect_ip_rate_per_second=0.01, trust_forwarded_for=True
    )
    url = f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws"
    one = {"X-Forwarded-For": "203.0.113.1"}
    for _ in range(3):
        async with connect(url, additional_headers=one):
            pass
    with pytest.raises(InvalidStatus) as answer:
        await connect(url, additional_headers=one)
    assert answer.value.response.status_code == 429
    assert int(answer.value.response.headers["Retry-After"]) >= 1
    async with connect(url, additional_headers={"X-Forwarded-For": "203.0.113.2"}) as other:
        assert other.protocol.state.name == "OPEN"
