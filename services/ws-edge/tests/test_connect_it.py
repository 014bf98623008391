"""Connecting: every token source, bad and expired tokens, a token that expires while
connected, heart-beats (a silent peer dropped on the connection's timer), the Origin
allow-list, the plain HTTP endpoints on the same port."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import stomp.exception
from chat_stomp.frames import Frame
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chat_testing.stomp import StompClient
from chat_testing.waiting import eventually
from ws_edge.disconnect import Disconnect


async def test_every_token_source_connects_with_stomp_py(world: Any) -> None:
    edge = await world.edge()
    token = world.token("alice.sources@example.com")
    by_handshake = await world.stomp_py(edge, header={"Authorization": f"Bearer {token}"})
    by_query = await world.stomp_py(edge, path=f"/ws?access_token={token}")
    by_passcode = await world.stomp_py(edge, username="alice", passcode=token)
    by_header = await world.stomp_py(edge, headers={"Authorization": f"Bearer {token}"})
    for client in (by_handshake, by_query, by_passcode, by_header):
        assert client.conn.is_connected()
    assert len(edge.edge.clients) == 4
    assert {c.email for c in edge.edge.clients.values()} == {"alice.sources@example.com"}


@pytest.mark.parametrize("token", ["garbage", None, "expired"])
async def test_bad_missing_or_expired_tokens_get_an_error_then_close(
    world: Any, token: str | None
) -> None:
    edge = await world.edge()
    if token == "expired":
        token = world.token("late@example.com", ttlSeconds=-3600)
    headers = (("passcode", token),) if token else ()
    with pytest.raises(ConnectionError, match=r"(?i)token|expired|malformed"):
        await StompClient.open(
            f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws", headers=headers
        )
    client = world.stomp_py  # stomp.py sees the refusal too
    with pytest.raises(stomp.exception.ConnectFailedException):
        await client(edge, passcode=token or "")
    await eventually(lambda: edge.edge.clients == {}, what="no client left on the edge")


async def test_a_connection_is_closed_when_its_token_expires(world: Any) -> None:
    edge = await world.edge()
    token = world.token("brief@example.com", ttlSeconds=1)
    client = await world.raw(edge, token)
    frame = await client.next_frame(within=5)
    assert frame.command == "ERROR"
    assert frame.header("message") == "token expired"
    with pytest.raises((ConnectionError, ConnectionClosed)):
        await client.next_frame(within=5)


async def heartbeating(url: str, token: str, heart_beat: str) -> tuple[StompClient, Frame]:
    """A client that CONNECTs with its own ``heart-beat`` header; and the CONNECTED."""
    socket = await connect(url, subprotocols=["v12.stomp"], ping_interval=None)  # type: ignore[list-item]
    client = StompClient(socket)
    headers = (("accept-version", "1.2"), ("host", "/"), ("heart-beat", heart_beat))
    await client.write(Frame("CONNECT", (*headers, ("passcode", token))))
    connected = await client.next_frame()
    assert connected.command == "CONNECTED"
    return client, connected


async def test_a_silent_peer_is_dropped_after_the_heart_beat_times_the_tolerance(
    world: Any,
) -> None:
    """The client promises a heart-beat every 200 ms, the edge asks for one every 100 ms: the
    negotiated 200 ms times the tolerance (2) is how long the edge waits for any data."""
    edge = await world.edge(heartbeat_send_ms=0, heartbeat_expect_ms=100)
    url = f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws"
    token = world.token("quiet@example.com")
    started = time.monotonic()  # before the CONNECT, the silent client's last data
    silent, connected = await heartbeating(url, token, "200,0")
    assert connected.header("heart-beat") == "0,100"
    [session] = edge.edge.clients.values()
    talking, _ = await heartbeating(url, token, "200,0")

    async def beat() -> None:
        while True:
            await talking.socket.send("\n")
            await asyncio.sleep(0.1)

    beating = asyncio.create_task(beat())
    try:
        frame = await silent.next_frame(within=5)
        waited = time.monotonic() - started
        assert frame.command == "ERROR"
        assert frame.header("message") == "heart-beat timeout"
        # The mechanism: 0.2 s x 2 on the connection's own timer, so not before 0.4 s; the
        # upper bound only says it is that timer (wide margin), not the test's 5 s deadline.
        assert 0.35 <= waited < 2.0
        with pytest.raises((ConnectionError, ConnectionClosed)):
            await silent.next_frame(within=5)
        assert silent.socket.close_code == Disconnect.HEARTBEAT_TIMEOUT.code
        assert session.ending is Disconnect.HEARTBEAT_TIMEOUT
        await asyncio.sleep(0.6)  # a negative check: three timeouts' worth, the beating stays
        await talking.subscribe("/user/queue/ack", ("receipt", "alive"))
        assert (await talking.next_frame()).header("receipt-id") == "alive"
    finally:
        beating.cancel()
        await silent.close()
        await talking.close()


async def test_origins_off_the_list_are_refused_at_the_handshake(world: Any) -> None:
    edge = await world.edge()
    url = f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, origin="http://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    async with connect(url, origin="http://app.example") as allowed:  # type: ignore[arg-type]
        assert allowed.protocol.state.name == "OPEN"
    async with connect(url, subprotocols=["v11.stomp", "v12.stomp"]) as no_origin:  # type: ignore[list-item]
        assert no_origin.subprotocol == "v12.stomp"


async def test_health_readiness_and_metrics_share_the_port(world: Any) -> None:
    edge = await world.edge()
    base = f"http://127.0.0.1:{edge.edge_server.settings.port}"
    await world.raw(edge, world.token("metrics@example.com"))
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        metrics = (await client.get("/metrics")).text
        assert "chat_ws_connections" in metrics
        assert "chat_ws_delivered_total" in metrics
        assert "chat_ws_disconnects_total" in metrics
        assert "chat_ws_subscriptions" in metrics
        assert (await client.get("/nope")).status_code == 404
