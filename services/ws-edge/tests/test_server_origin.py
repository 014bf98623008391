"""The Origin check at the handshake: an Origin on the allow-list passes, so does a same-origin
request (the Origin names the Host the request asks for), a client sending no Origin passes,
and any other Origin is refused with 403."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from ws_edge.server import origin_allowed

ALLOWED = ("http://app.example",)


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://app.example", "edge:8083", True),  # on the list
        ("http://app.example", None, True),
        ("http://edge:8083", "edge:8083", True),  # same origin
        ("https://edge:8083", "edge:8083", True),
        (None, "edge:8083", True),  # not a browser
        ("http://evil.example", "edge:8083", False),
        ("http://evil.example", None, False),
        ("http://edge:8083", None, False),  # no Host to be the same as
        ("http://edge:8083", "edge:9999", False),  # another port is another origin
        ("http://edge", "edge:8083", False),
        ("ftp://edge:8083", "edge:8083", False),
        ("null", "edge:8083", False),
        ("http://app.example.evil", "edge:8083", False),
    ],
)
def test_origin_allowed(origin: str | None, host: str | None, allowed: bool) -> None:
    assert origin_allowed(origin, ALLOWED, host) is allowed


def test_a_wildcard_admits_any_origin() -> None:
    assert origin_allowed("http://evil.example", ("*",), "edge:8083")


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
