"""A world for the edge's integration tests: the real session-svc and message-svc (served by
uvicorn on free ports, on the test database), the real RabbitMQ, a stand-in outbox relay that
publishes what message-svc's outbox rows hold, edges started in-process, and clients (stomp.py
over WebSocket, unmodified, and a raw asyncio STOMP client on the websockets library).

Each world uses its own send queue, so a message-svc of another stack on the same broker
never takes this test's ``/app/chat.send`` commands; everything started is stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
import stomp
import uvicorn
from starlette.types import ASGIApp

from chat_common import amqp
from chat_testing.stomp import StompClient
from message_svc.app import create_app as message_app
from message_svc.settings import Settings as MessageSettings
from session_svc.app import create_app as session_app
from session_svc.settings import Settings as SessionSettings
from ws_edge.server import Running, running
from ws_edge.settings import Settings as EdgeSettings

WITHIN = 10.0  # seconds any single wait in these tests may take


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, port: int) -> AsyncIterator[None]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(WITHIN):
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped while starting")
            await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@dataclass(frozen=True)
class Chat:
    id: uuid.UUID
    alice: str
    bob: str
    alice_token: str
    bob_token: str

    @property
    def topic(self) -> str:
        return f"/topic/session.{self.id}"


class StompPy:
    """stomp.py 9's WebSocket connection, unmodified; frames collected in a thread-safe queue."""

    def __init__(self, port: int, *, path: str = "/ws", header: dict[str, str] | None = None):
        self.conn = stomp.WSConnection(
            [("127.0.0.1", port)],
            ws_path=path,
            header=header,
            reconnect_attempts_max=1,
            heartbeats=(0, 0),
        )
        self.frames: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.conn.set_listener("collect", self)

    # stomp.py listener callbacks (its receiver thread)
    def on_message(self, frame: Any) -> None:
        self.frames.put(("MESSAGE", frame))

    def on_receipt(self, frame: Any) -> None:
        self.frames.put(("RECEIPT", frame))

    def on_error(self, frame: Any) -> None:
        self.frames.put(("ERROR", frame))

    def on_disconnected(self) -> None:
        self.frames.put(("DISCONNECTED", None))

    async def connect(self, **kwargs: Any) -> None:
        await asyncio.to_thread(self.conn.connect, wait=True, **kwargs)

    async def next(self, within: float = WITHIN) -> tuple[str, Any]:
        async with asyncio.timeout(within):
            while True:
                try:
                    return self.frames.get_nowait()
                except queue.Empty:
                    await asyncio.sleep(0.01)

    async def messages(self, count: int, within: float = WITHIN) -> list[Any]:
        got: list[Any] = []
        async with asyncio.timeout(within):
            while len(got) < count:
                kind, frame = await self.next(within)
                if kind == "MESSAGE":
                    got.append(frame)
        return got

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.conn.disconnect)


class Relay:
    """A stand-in for outbox-relay: publishes pending outbox rows as they are, then drops
    them (one session's rows in id order)."""

    def __init__(self, pool: asyncpg.Pool, exchange: aio_pika.abc.AbstractExchange) -> None:
        self._pool = pool
        self._exchange = exchange
        self._task: asyncio.Task[None] | None = None

    async def once(self) -> int:
        rows = await self._pool.fetch(
            "SELECT id, routing_key, headers, payload FROM chat_message_outbox ORDER BY id"
        )
        for row in rows:
            headers = json.loads(row["headers"])
            await self._exchange.publish(
                aio_pika.Message(bytes(row["payload"]), headers=headers),
                row["routing_key"],
                mandatory=False,
            )
            await self._pool.execute("DELETE FROM chat_message_outbox WHERE id = $1", row["id"])
        return len(rows)

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await self.once()
                await asyncio.sleep(0.02)

        self._task = asyncio.create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class World:
    def __init__(
        self,
        pool: asyncpg.Pool,
        flairbit: Any,
        exchange: aio_pika.abc.AbstractExchange,
        send_queue: str,
        session_url: str,
        message_url: str,
        stack: contextlib.AsyncExitStack,
    ) -> None:
        self.pool = pool
        self.flairbit = flairbit
        self.exchange = exchange
        self.send_queue = send_queue
        self.session_url = session_url
        self.message_url = message_url
        self.relay = Relay(pool, exchange)
        self.http = httpx.AsyncClient(base_url=message_url, timeout=WITHIN)
        stack.push_async_callback(self.http.aclose)
        self._stack = stack
        self._edges = 0

    def token(self, email: str, **body: Any) -> str:
        return str(self.flairbit.token(email, **body))

    async def chat(self, tag: str | None = None, *, bob: str | None = None) -> Chat:
        """A session between two fresh users (or a fresh Alice and the given ``bob``),
        inserted as session-svc stores it."""
        tag = tag or uuid.uuid4().hex[:8]
        alice, bob = f"alice.{tag}@example.com", bob or f"bob.{tag}@example.com"
        sid = uuid.uuid4()
        low, high = sorted([uuid.uuid4(), uuid.uuid4()])
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO chat_sessions (id, intent, profile_lo, profile_hi)"
                " VALUES ($1, 'dating', $2, $3)",
                sid,
                low,
                high,
            )
            await conn.executemany(
                "INSERT INTO chat_participants (session_id, profile_id, user_email, display_name)"
                " VALUES ($1, $2, $3, $4)",
                [(sid, low, alice, "Alice"), (sid, high, bob, "Bob")],
            )
        return Chat(sid, alice, bob, self.token(alice), self.token(bob))

    def edge_settings(self, **overrides: Any) -> EdgeSettings:
        self._edges += 1
        values: dict[str, Any] = {
            "port": free_port(),
            "instance_id": f"test-{uuid.uuid4().hex[:8]}",
            "session_svc_url": self.session_url,
            "message_svc_url": self.message_url,
            "send_queue": self.send_queue,
            "jwt_jwks_url": self.flairbit.jwks_url,
            "jwt_issuer": "flairbit",
            "jwt_audience": "chat",
            "allowed_origins": ("http://app.example",),
            "shutdown_grace_seconds": 2.0,
            **overrides,
        }
        return EdgeSettings(**values)

    def edge_context(self, **overrides: Any) -> contextlib.AbstractAsyncContextManager[Running]:
        """An edge to serve within the caller's own ``async with``."""
        return running(self.edge_settings(**overrides))

    async def edge(self, **overrides: Any) -> Running:
        """An edge serving in-process until the end of the test."""
        return await self._stack.enter_async_context(running(self.edge_settings(**overrides)))

    async def stomp_py(self, edge: Running, *, path: str = "/ws", **kwargs: Any) -> StompPy:
        client = StompPy(
            edge.edge_server.settings.port, path=path, header=kwargs.pop("header", None)
        )
        self._stack.push_async_callback(client.close)
        await client.connect(**kwargs)
        return client

    async def raw(self, edge: Running, token: str | None, **kwargs: Any) -> StompClient:
        """The product's asyncio STOMP client (websockets library) with the token in the URL."""
        url = f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws"
        if token:
            url += f"?access_token={token}"
        client = await StompClient.open(url, **kwargs)
        self._stack.push_async_callback(client.close)
        return client

    async def rest_send(self, chat: Chat, sender: str, content: str) -> dict[str, Any]:
        token = chat.alice_token if sender == chat.alice else chat.bob_token
        answer = await self.http.post(
            "/api/chat/message",
            json={
                "sessionId": str(chat.id),
                "content": content,
                "clientMessageId": str(uuid.uuid4()),
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def publish(self, key: str, headers: dict[str, Any], body: bytes) -> None:
        await self.exchange.publish(aio_pika.Message(body, headers=headers), key, mandatory=False)


@pytest.fixture
async def world(
    db_pool: asyncpg.Pool, database_url: str, flairbit_reset: Any
) -> AsyncIterator[World]:
    flairbit = flairbit_reset
    send_queue = f"chat.send.ws-edge-test.{uuid.uuid4().hex[:8]}"
    jwt: dict[str, Any] = {
        "jwt_jwks_url": flairbit.jwks_url,
        "jwt_issuer": "flairbit",
        "jwt_audience": "chat",
    }
    session_port, message_port = free_port(), free_port()
    sessions = session_app(
        SessionSettings(
            database_url=database_url,
            flairbit_url=flairbit.url,
            service_private_key_file=flairbit.service_private_key_file,
            **jwt,
        )
    )
    messages = message_app(
        MessageSettings(
            database_url=database_url,
            consume_ws_sends=True,
            send_queue=send_queue,
            send_burst=10_000,
            send_rate_per_second=10_000.0,
            duplicate_content_limit=10_000,
            **jwt,
        )
    )
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(connection.close)

        async def drop_send_queue() -> None:
            channel = await connection.channel()
            await channel.queue_delete(send_queue)

        stack.push_async_callback(drop_send_queue)
        channel = await connection.channel()
        exchange = await amqp.events_exchange(channel)
        await stack.enter_async_context(serving(sessions, session_port))
        await stack.enter_async_context(serving(messages, message_port))
        world = World(
            db_pool,
            flairbit,
            exchange,
            send_queue,
            f"http://127.0.0.1:{session_port}",
            f"http://127.0.0.1:{message_port}",
            stack,
        )
        stack.push_async_callback(world.relay.stop)
        yield world
