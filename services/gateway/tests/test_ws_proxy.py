"""/ws through the gateway to a real WebSocket upstream: frames, subprotocol, close codes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from gateway.app import create_app
from gateway.settings import Settings


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def edge_handler(connection: ServerConnection) -> None:
    """Echoes, reports what it saw, and closes with 1012 on request."""
    request = connection.request
    assert request is not None
    await connection.send(f"auth={request.headers.get('authorization')} path={request.path}")
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
        subprotocols=[Subprotocol("v12.stomp"), Subprotocol("v11.stomp")],
    ):
        yield


@contextlib.asynccontextmanager
async def gateway(edge_port: int, issuer_keys: Any, tmp_path: Any) -> AsyncIterator[int]:
    public = tmp_path / "issuer.pem"
    public.write_bytes(issuer_keys.public_pem)
    settings = Settings(
        ws_edge_url=f"ws://127.0.0.1:{edge_port}",
        jwt_public_key_file=str(public),
        jwt_issuer="flairbit",
        jwt_audience="chat",
        allowed_origins=("http://app.example",),
        ws_connect_burst=2,
        ws_connect_rate_per_second=0.01,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to await
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


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
            additional_headers={"Authorization": f"Bearer {token}"},
        ) as client,
    ):
        assert client.subprotocol == "v12.stomp"
        assert await client.recv() == f"auth=Bearer {token} path=/ws?access_token=abc"
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
            async with connect(f"ws://127.0.0.1:{port}/ws", origin="http://evil.example"):
                pass
        assert caught.value.response.status_code == 403
        async with connect(
            f"ws://127.0.0.1:{port}/ws",
            origin="http://app.example",
            subprotocols=[Subprotocol("v11.stomp")],
        ) as ok:
            assert ok.subprotocol == "v11.stomp"
            assert (await ok.recv()).startswith("auth=")


async def test_edge_down_closes_with_try_again_later(issuer_keys: Any, tmp_path: Any) -> None:
    async with gateway(free_port(), issuer_keys, tmp_path) as port:
        with pytest.raises((InvalidStatus, ConnectionClosed)):
            async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as client:
                await client.recv()


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
                assert (await client.recv()).startswith("auth=")
        with pytest.raises(InvalidStatus) as flood:
            async with connect(url, subprotocols=[Subprotocol("v12.stomp")]):
                pass
        assert flood.value.response.status_code == 429
        assert int(flood.value.response.headers["Retry-After"]) >= 1
        # another user is not affected
        other = f"ws://127.0.0.1:{port}/ws?access_token={make_token('carol@example.com')}"
        async with connect(other, subprotocols=[Subprotocol("v12.stomp")]) as client:
            assert (await client.recv()).startswith("auth=")
