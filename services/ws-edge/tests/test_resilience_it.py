"""What the edge does when things go wrong: a client too slow to read, SIGTERM, the broker
going away and coming back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.exceptions import ChannelNotFoundEntity
from websockets.exceptions import ConnectionClosed

from chat_common import routing
from chat_testing.stomp import StompClient
from chat_testing.tcpproxy import TcpProxy
from chat_testing.waiting import eventually
from ws_edge.disconnect import Disconnect


async def read_to_the_end(client: StompClient) -> None:
    async with asyncio.timeout(10):
        async for _ in client.frames():
            pass


async def test_a_slow_reader_is_disconnected_and_the_others_keep_up(world: Any) -> None:
    chat = await world.chat()
    edge = await world.edge(max_outbound_bytes=64 * 1024, slow_close_seconds=5.0)
    slow = await world.raw(edge, chat.bob_token)
    fast = await world.raw(edge, chat.alice_token)
    await slow.subscribe(chat.topic, ("receipt", "s"))
    await fast.subscribe(chat.topic, ("receipt", "f"))
    assert (await slow.next_frame()).command == "RECEIPT"
    assert (await fast.next_frame()).command == "RECEIPT"
    [session] = [c for c in edge.edge.clients.values() if c.email == chat.bob]
    received = 0

    async def read_fast() -> None:
        nonlocal received
        async for frame in fast.frames():
            if frame.command == "MESSAGE":
                received += 1

    reader = asyncio.create_task(read_fast())
    body = b'{"pad":"' + b"x" * 8000 + b'"}'
    published = 0
    headers = {"x-event": "message", "x-session-id": str(chat.id)}
    try:
        async with asyncio.timeout(30):
            while session.ending is None:  # the slow client reads nothing meanwhile
                for _ in range(100):
                    published += 1
                    await world.publish(
                        routing.session_key(chat.id), {**headers, "x-seq": published}, body
                    )
                await asyncio.sleep(0.01)
        assert session.ending is Disconnect.SLOW_CONSUMER
        with pytest.raises(ConnectionClosed) as closed:  # it reads: data, then the close frame
            await read_to_the_end(slow)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == Disconnect.SLOW_CONSUMER.code
        assert "too slow" in closed.value.rcvd.reason
        await eventually(lambda: received >= published, what="the fast reader has everything")
        await eventually(lambda: session.id not in edge.edge.clients, what="the slow one gone")
    finally:
        reader.cancel()


def _env(settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "PORT"))}
    for name in ("port", "instance_id", "session_svc_url", "message_svc_url", "send_queue"):
        env[name.upper()] = str(getattr(settings, name))
    env.update(
        JWT_JWKS_URL=settings.jwt_jwks_url,
        JWT_ISSUER="flairbit",
        JWT_AUDIENCE="chat",
        LOG_LEVEL="WARNING",
        SHUTDOWN_GRACE_SECONDS="3",
    )
    return env


async def test_sigterm_closes_clients_with_1012_and_drops_the_queue(world: Any) -> None:
    chat = await world.chat()
    settings = world.edge_settings()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ws_edge",
        env=_env(settings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{settings.port}"
        async with httpx.AsyncClient(base_url=base, timeout=1) as http, asyncio.timeout(20):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                assert process.returncode is None, "ws-edge exited while starting"
                await asyncio.sleep(0.05)
        url = f"ws://127.0.0.1:{settings.port}/ws?access_token={chat.bob_token}"
        client = await StompClient.open(url)
        await client.subscribe(chat.topic, ("receipt", "r"))
        assert (await client.next_frame()).command == "RECEIPT"
        process.send_signal(signal.SIGTERM)
        frame = await client.next_frame()
        assert frame.command == "ERROR"
        assert "reconnect" in (frame.header("message") or "")
        with pytest.raises(ConnectionClosed) as closed:
            await client.next_frame()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    try:
        channel = await connection.channel()
        with pytest.raises(ChannelNotFoundEntity):  # the queue, and its bindings, are gone
            await channel.declare_queue(f"ws-edge.{settings.instance_id}", passive=True)
    finally:
        await connection.close()


async def test_losing_the_broker_closes_clients_with_1013_and_recovers(world: Any) -> None:
    chat = await world.chat()
    async with TcpProxy("127.0.0.1", 5672) as proxy:
        amqp_url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/?reconnect_interval=0.2"
        async with world.edge_context(amqp_url=amqp_url) as edge:  # stopped before the proxy
            base = f"http://127.0.0.1:{edge.edge_server.settings.port}"
            client = await world.raw(edge, chat.bob_token)
            await client.subscribe(chat.topic, ("receipt", "r"))
            assert (await client.next_frame()).command == "RECEIPT"
            proxy.cut()
            assert (await client.next_frame()).command == "ERROR"
            with pytest.raises(ConnectionClosed) as closed:
                await client.next_frame()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1013
            async with httpx.AsyncClient(base_url=base, timeout=2) as http:
                assert (await http.get("/readyz")).status_code == 503
                proxy.restore()

                async def ready() -> bool:
                    return (await http.get("/readyz")).status_code == 200

                await eventually(ready, poll=0.05)
            again = await world.raw(edge, chat.bob_token)
            await again.subscribe(chat.topic, ("receipt", "r"))
            assert (await again.next_frame()).command == "RECEIPT"
            headers = {"x-event": "message", "x-session-id": str(chat.id), "x-seq": 1}
            await world.publish(routing.session_key(chat.id), headers, b"{}")
            assert (await again.next_frame()).header("x-seq") == "1"
            await again.close()
