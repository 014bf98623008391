"""/ws through the gateway (under uvicorn, as ``python -m gateway`` runs it) to a real WebSocket
upstream: frames, subprotocol, close codes, refusals, the message bound, and what the edge is
told about the client."""

from __future__ import annotations

import contextlib
import http
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response
from websockets.typing import Origin, Subprotocol

from chat_common.observability import quiet_server_logs
from chat_common.serve import server_config
from chat_testing.waiting import eventually
from gateway.app import create_app

from .loopback import free_port, gateway_settings, json_logs, serving


def refusal(connection: ServerConnection, request: Request) -> Response | None:
    """Refuses handshakes that ask for it (``?refuse=401``), as the edge refuses its own."""
    asked = parse_qs(urlsplit(request.path).query).get("refuse")
    if not asked:
        return None
    status = http.HTTPStatus(int(asked[0]))
    body = json.dumps({"status": status.value, "code": "EDGE_SAYS_NO"}).encode()
    headers = Headers(
        [
            ("Content-Type", "application/problem+json"),
            ("Content-Length", str(len(body))),
            ("Retry-After", "7"),
            ("WWW-Authenticate", 'Bearer error="invalid_token"'),
            ("X-Edge-Internal", "not for clients"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def stomp_version(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """As the edge chooses: the newest STOMP both speak, none when none is offered."""
    for version in ("v12.stomp", "v11.stomp"):
        if version in offered:
            return Subprotocol(version)
    return None


async def edge_handler(connection: ServerConnection) -> None:
    """Reports what it saw, echoes, and closes with 1012 on request."""
    request = connection.request
    assert request is not None
    seen = {
        "authorization": request.headers.get("authorization"),
        "path": request.path,
        "requestId": request.headers.get("x-request-id"),
        "forwardedFor": request.headers.get("x-forwarded-for"),
        "origin": request.headers.get("origin"),
    }
    await connection.send(json.dumps(seen))
    async for message in connection:
        if message == "close-1012":
            await connection.close(code=1012, reason="restarting")
            return
        await connection.send(message)


@contextlib.asynccontextmanager
async def edge(port: int) -> AsyncIterator[None]:
    async with serve(
        edge_handler,
        "127.0.0.1",
        port,
        select_subprotocol=stomp_version,
        process_request=refusal,
        max_size=1 << 20,
    ):
        yield


@contextlib.asynccontextmanager
async def gateway(
    edge_port: int, issuer_keys: Any, tmp_path: Any, **overrides: Any
) -> AsyncIterator[int]:
    values: dict[str, Any] = {
        "ws_edge_url": f"ws://127.0.0.1:{edge_port}",
        "allowed_origins": ("http://app.example",),
        "ws_connect_burst": 2,
        "ws_connect_rate_per_second": 0.01,
        **overrides,
    }
    settings = gateway_settings(issuer_keys, tmp_path, **values)
    app = create_app(settings)
    config = server_config(
        app, host="127.0.0.1", port=free_port(), ws_max_size=settings.ws_max_message_bytes
    )
    async with serving(app, config) as served:
        yield served.port


@contextlib.contextmanager
def server_logs_quieted() -> Iterator[None]:
    """uvicorn's logger as ``setup_logging`` leaves it in the service, for one test."""
    uvicorn_log = logging.getLogger("uvicorn.error")
    level, filters = uvicorn_log.level, list(uvicorn_log.filters)
    quiet_server_logs()
    try:
        yield
    finally:
        uvicorn_log.setLevel(level)
        uvicorn_log.filters[:] = filters


async def first(client: Any) -> dict[str, Any]:
    seen: dict[str, Any] = json.loads(await client.recv())
    return seen


async def test_frames_subprotocol_headers_and_close_code_are_relayed(
    issuer_keys: Any, tmp_path: Any, make_token: Any
) -> None:
    token = make_token("alice@example.com")
    edge_port = free_port()
    async with (
        edge(edge_port),
        gateway(edge_port, issuer_keys, tmp_path) as port,
        connect(
            f"ws://127.0.0.1:{port}/ws?access_token=abc",
            subprotocols=[Subprotocol("v12.stomp")],
            additional_headers={"Authorization": f"Bearer {token}", "X-Request-Id": "ws-req-7"},
        ) as client,
    ):
        assert client.subprotocol == "v12.stomp"
        seen = await first(client)
        assert seen["authorization"] == f"Bearer {token}"
        assert seen["path"] == "/ws?access_token=abc"
        assert seen["requestId"] == "ws-req-7"
        assert seen["origin"] is None
        assert client.response is not None
        assert client.response.headers["x-request-id"] == "ws-req-7"
        # the client offered permessage-deflate (the library's default); the gateway declines it
        assert "sec-websocket-extensions" not in client.response.headers
        await client.send("CONNECT\n\n\x00")
        assert await client.recv() == "CONNECT\n\n\x00"
        await client.send(b"\x00\x01binary")
        assert await client.recv() == b"\x00\x01binary"
        await client.send("close-1012")
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert client.close_code == 1012
        assert client.close_reason == "restarting"


async def test_origin_not_allowed_is_refused(issuer_keys: Any, tmp_path: Any) -> None:
    edge_port = free_port()
    async with edge(edge_port), gateway(edge_port, issuer_keys, tmp_path) as port:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(f"ws://127.0.0.1:{port}/ws", origin=Origin("http://evil.example")):
                pass
        assert caught.value.response.status_code == 403
        assert json.loads(caught.value.response.body)["code"] == "ORIGIN_NOT_ALLOWED"
        async with connect(
            f"ws://127.0.0.1:{port}/ws",
            origin=Origin("http://app.example"),
            subprotocols=[Subprotocol("v11.stomp")],
        ) as ok:
            assert ok.subprotocol == "v11.stomp"
            assert (await first(ok))["origin"] is None  # the edge never sees the browser's


async def test_edge_down_is_503_with_retry_after(issuer_keys: Any, tmp_path: Any) -> None:
    async with gateway(free_port(), issuer_keys, tmp_path) as port:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5):
                pass
    assert caught.value.response.status_code == 503
    assert caught.value.response.headers["Retry-After"] == "1"
    assert json.loads(caught.value.response.body)["code"] == "UPSTREAM_UNAVAILABLE"


@pytest.mark.parametrize("status", [401, 403, 429, 503])
async def test_the_edges_refusal_reaches_the_client_as_it_was(
    issuer_keys: Any, tmp_path: Any, status: int
) -> None:
    edge_port = free_port()
    async with edge(edge_port), gateway(edge_port, issuer_keys, tmp_path) as port:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(f"ws://127.0.0.1:{port}/ws?refuse={status}"):
                pass
    refused = caught.value.response
    assert refused.status_code == status
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.headers["Retry-After"] == "7"
    assert refused.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert "X-Edge-Internal" not in refused.headers
    assert json.loads(refused.body) == {"status": status, "code": "EDGE_SAYS_NO"}


async def test_bad_handshake_token_and_attempt_floods_are_refused(
    issuer_keys: Any, tmp_path: Any, make_token: Any
) -> None:
    edge_port = free_port()
    async with edge(edge_port), gateway(edge_port, issuer_keys, tmp_path) as port:
        with pytest.raises(InvalidStatus) as bad:
            async with connect(
                f"ws://127.0.0.1:{port}/ws?access_token=garbage",
                subprotocols=[Subprotocol("v12.stomp")],
            ):
                pass
        assert bad.value.response.status_code == 401
        url = f"ws://127.0.0.1:{port}/ws?access_token={make_token('bob@example.com')}"
        for _ in range(2):
            async with connect(url, subprotocols=[Subprotocol("v12.stomp")]) as client:
                assert (await first(client))["path"].startswith("/ws?access_token=")
        with pytest.raises(InvalidStatus) as flood:
            async with connect(url, subprotocols=[Subprotocol("v12.stomp")]):
                pass
        assert flood.value.response.status_code == 429
        assert int(flood.value.response.headers["Retry-After"]) >= 1
        # another user is not affected
        other = f"ws://127.0.0.1:{port}/ws?access_token={make_token('carol@example.com')}"
        async with connect(other, subprotocols=[Subprotocol("v12.stomp")]) as client:
            assert (await first(client))["path"].startswith("/ws?access_token=")


async def test_messages_over_the_bound_close_with_1009(issuer_keys: Any, tmp_path: Any) -> None:
    edge_port = free_port()
    async with (
        edge(edge_port),
        gateway(edge_port, issuer_keys, tmp_path, ws_max_message_bytes=80 * 1024) as port,
        connect(f"ws://127.0.0.1:{port}/ws", max_size=1 << 20) as client,
    ):
        await first(client)
        frame = "x" * (64 * 1024)  # the edge's frame limit passes the gateway
        await client.send(frame)
        assert await client.recv() == frame
        await client.send("x" * (96 * 1024))
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert client.close_code == 1009


@pytest.mark.parametrize(("trusted", "expected"), [(False, "127.0.0.1"), (True, "198.51.100.9")])
async def test_forwarded_for_follows_the_gateways_trust_setting(
    issuer_keys: Any, tmp_path: Any, trusted: bool, expected: str
) -> None:
    edge_port = free_port()
    async with (
        edge(edge_port),
        gateway(edge_port, issuer_keys, tmp_path, trust_forwarded_for=trusted) as port,
        connect(
            f"ws://127.0.0.1:{port}/ws",
            additional_headers={"X-Forwarded-For": "198.51.100.9, 10.0.0.1"},
        ) as client,
    ):
        assert (await first(client))["forwardedFor"] == expected


async def test_the_handshake_request_id_is_the_logged_one_and_no_token_is_logged(
    issuer_keys: Any, tmp_path: Any, make_token: Any
) -> None:
    token = make_token("dave@example.com")
    edge_port = free_port()
    with server_logs_quieted(), json_logs() as logs:
        async with edge(edge_port), gateway(edge_port, issuer_keys, tmp_path) as port:
            async with connect(f"ws://127.0.0.1:{port}/ws?access_token={token}") as client:
                seen = await first(client)
            with pytest.raises(InvalidStatus):
                async with connect(f"ws://127.0.0.1:{port}/ws?refuse=429&access_token={token}"):
                    pass
            await eventually(
                lambda: len([x for x in logs.lines if "chat.access" in x]) >= 2,
                what="both handshakes logged",
            )
    assert len(seen["requestId"]) == 32  # none was sent: the gateway made one
    access = [json.loads(x) for x in logs.lines if '"logger": "chat.access"' in x]
    assert [(a["path"], a["status"]) for a in access] == [("/ws", 101), ("/ws", 429)]
    assert access[0]["request_id"] == seen["requestId"]
    # The gateway's lines; the test's own client and edge log their requests under websockets.*
    gateway_lines = [x for x in logs.lines if '"logger": "websockets.' not in x]
    assert token not in "\n".join(gateway_lines)
    assert "access_token" not in "\n".join(gateway_lines)
