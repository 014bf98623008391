"""One message's trace, end to end, in one process with an in-memory exporter:

gateway (HTTP in, a grouped send out) -> message-svc (the send's group, PostgreSQL; the outbox
row's headers carry the W3C traceparent) -> outbox-relay (PRODUCER span per publish, its own
traceparent in the AMQP headers) -> RabbitMQ -> ws-edge (CONSUMER span per delivery, and the
``ws push`` of the MESSAGE frames to the local subscribers) -> a real STOMP client over
WebSocket.

Every service runs in-process on the real PostgreSQL (this process's test database) and the
real RabbitMQ. Nothing else reaches the edge: its queue is bound only to the keys of a fresh
session and of fresh users, and the relay drains this process's own database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp

from chat_common import routing, tracing
from chat_testing.stomp import StompClient
from chat_testing.waiting import eventually
from gateway.app import create_app as gateway_app
from gateway.settings import Settings as GatewaySettings
from message_svc.app import create_app as message_app
from message_svc.settings import Settings as MessageSettings
from outbox_relay.app import open_pool
from outbox_relay.publisher import RabbitPublisher
from outbox_relay.relay import Relay
from outbox_relay.settings import Settings as RelaySettings
from session_svc.app import create_app as session_app
from session_svc.settings import Settings as SessionSettings
from ws_edge.server import running as running_edge
from ws_edge.settings import Settings as EdgeSettings

EXPORTER = InMemorySpanExporter()
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
WITHIN = 10.0  # seconds any single wait may take


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
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


@contextlib.asynccontextmanager
async def running_relay(settings: RelaySettings) -> AsyncIterator[Relay]:
    """outbox-relay's loop as ``python -m outbox_relay`` runs it, without its web app."""
    pool = await open_pool(settings)
    publisher = RabbitPublisher(settings.amqp_url, timeout=settings.publish_timeout_seconds)
    relay = Relay(settings, pool, publisher)
    try:
        await relay.start()
        yield relay
    finally:
        await relay.stop()
        await publisher.close()
        await pool.close()


@pytest.fixture(scope="module", autouse=True)
def tracing_on() -> Iterator[None]:
    tracing.setup_tracing("trace-test", exporter=EXPORTER)
    yield
    # The provider stays for the rest of the process (it cannot be uninstalled); the exporter
    # stops keeping what later suites' services trace.
    EXPORTER.shutdown()


@dataclass(frozen=True)
class Chat:
    id: uuid.UUID
    alice: str
    bob: str


@pytest.fixture
async def chat(db_pool: asyncpg.Pool) -> Chat:
    """A session between two users nobody else uses, inserted as session-svc stores it."""
    tag = uuid.uuid4().hex[:8]
    chat = Chat(uuid.uuid4(), f"alice.{tag}@example.com", f"bob.{tag}@example.com")
    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    async with db_pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO chat_sessions (id, intent, profile_lo, profile_hi)"
            " VALUES ($1, 'dating', $2, $3)",
            chat.id,
            low,
            high,
        )
        await conn.executemany(
            "INSERT INTO chat_participants (session_id, profile_id, user_email, display_name)"
            " VALUES ($1, $2, $3, $4)",
            [(chat.id, low, chat.alice, "Alice"), (chat.id, high, chat.bob, "Bob")],
        )
    return chat


@pytest.fixture
def jwt_settings(issuer_keys: Any, tmp_path: Path) -> dict[str, Any]:
    public = tmp_path / "issuer.pem"
    public.write_bytes(issuer_keys.public_pem)
    return {"jwt_public_key_file": str(public), "jwt_issuer": "flairbit", "jwt_audience": "chat"}


async def send(port: int, chat: Chat, token: str, content: str) -> httpx.Response:
    """``POST /api/chat/message`` (REST, through the gateway on ``port``)."""
    async with httpx.AsyncClient(timeout=WITHIN) as client:
        return await client.post(
            f"http://127.0.0.1:{port}/api/chat/message",
            json={
                "sessionId": str(chat.id),
                "content": content,
                "clientMessageId": str(uuid.uuid4()),
            },
            headers={"Authorization": f"Bearer {token}"},
        )


def _statement(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    return str(attributes.get("db.statement") or attributes.get("db.query.text") or "")


class Trace:
    """The finished spans of one trace, and their family relations."""

    def __init__(self, spans: Sequence[ReadableSpan], trace_id: int) -> None:
        self.spans = [s for s in spans if _context(s).trace_id == trace_id]
        self.by_id = {_context(s).span_id: s for s in self.spans}

    def parent(self, span: ReadableSpan) -> ReadableSpan | None:
        return None if span.parent is None else self.by_id.get(span.parent.span_id)

    def ancestors(self, span: ReadableSpan) -> list[ReadableSpan]:
        found = []
        while (parent := self.parent(span)) is not None:
            found.append(parent)
            span = parent
        return found

    def one(self, check: Callable[[ReadableSpan], bool]) -> ReadableSpan:
        (span,) = [s for s in self.spans if check(s)]
        return span


def _context(span: ReadableSpan) -> Any:
    assert span.context is not None
    return span.context


def _is_server(port: int) -> Callable[[ReadableSpan], bool]:
    def check(span: ReadableSpan) -> bool:
        attributes = span.attributes or {}
        return span.kind is SpanKind.SERVER and port in (
            attributes.get("server.port"),
            attributes.get("net.host.port"),
        )

    return check


def _outbox_traceparent(row: asyncpg.Record) -> str:
    return str(json.loads(row["headers"])["traceparent"])


async def test_one_message_is_one_trace(
    db_pool: asyncpg.Pool,
    database_url: str,
    make_token: Any,
    jwt_settings: dict[str, Any],
    chat: Chat,
) -> None:
    message_port, gateway_port = free_port(), free_port()
    messages = message_app(
        MessageSettings(database_url=database_url, consume_ws_sends=False, **jwt_settings)
    )
    gateway = gateway_app(
        GatewaySettings(
            message_svc_url=f"http://127.0.0.1:{message_port}",
            session_svc_url=f"http://127.0.0.1:{message_port}",
            **jwt_settings,
        )
    )
    EXPORTER.clear()
    async with serving(messages, message_port), serving(gateway, gateway_port):
        answer = await send(gateway_port, chat, make_token(chat.alice), "traced")
    assert answer.status_code == 200, answer.text
    spans = EXPORTER.get_finished_spans()
    gateway_span = next(s for s in spans if _is_server(gateway_port)(s))
    trace_id = _context(gateway_span).trace_id
    in_trace = [s for s in spans if _context(s).trace_id == trace_id]
    kinds = {(s.kind.name, s.resource.attributes["service.name"]) for s in in_trace}
    assert ("CLIENT", "trace-test") in kinds  # the gateway's call to message-svc, and the SQL
    assert sum(1 for s in in_trace if s.kind.name == "SERVER") == 2  # gateway and message-svc
    assert any("INSERT" in s.name or "chat_messages" in str(s.attributes) for s in in_trace)
    row = await db_pool.fetchrow("SELECT headers FROM chat_message_outbox")
    assert row is not None
    assert _outbox_traceparent(row).split("-")[1] == f"{trace_id:032x}"


@pytest.fixture
async def outbox_copies(db_pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Keeps a copy of every outbox row as it is inserted (the relay deletes a row once the
    broker confirmed it): ``trace_outbox_copy``."""
    await db_pool.execute(
        """
        CREATE TABLE trace_outbox_copy (id bigint, headers jsonb);
        CREATE FUNCTION trace_outbox_copy() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO trace_outbox_copy VALUES (NEW.id, NEW.headers);
            RETURN NEW;
        END $$;
        CREATE TRIGGER trace_outbox_copy AFTER INSERT ON chat_message_outbox
            FOR EACH ROW EXECUTE FUNCTION trace_outbox_copy();
        """
    )
    try:
        yield
    finally:
        await db_pool.execute(
            "DROP TRIGGER trace_outbox_copy ON chat_message_outbox;"
            " DROP FUNCTION trace_outbox_copy(); DROP TABLE trace_outbox_copy"
        )


@pytest.mark.usefixtures("outbox_copies")
async def test_the_trace_follows_the_message_to_the_websocket_push(
    db_pool: asyncpg.Pool,
    database_url: str,
    make_token: Any,
    service_keys: Any,
    jwt_settings: dict[str, Any],
    chat: Chat,
    tmp_path: Path,
) -> None:
    service_key = tmp_path / "service.pem"
    service_key.write_bytes(service_keys.private_pem)
    session_port, message_port, gateway_port = free_port(), free_port(), free_port()
    sessions = session_app(
        SessionSettings(
            database_url=database_url,
            flairbit_url="http://127.0.0.1:9",  # membership checks never ask FlairBit
            service_private_key_file=str(service_key),
            **jwt_settings,
        )
    )
    messages = message_app(
        MessageSettings(database_url=database_url, consume_ws_sends=False, **jwt_settings)
    )
    gateway = gateway_app(
        GatewaySettings(
            message_svc_url=f"http://127.0.0.1:{message_port}",
            session_svc_url=f"http://127.0.0.1:{session_port}",
            **jwt_settings,
        )
    )
    instance = f"trace-{uuid.uuid4().hex[:8]}"
    relay_settings = RelaySettings(
        database_url=database_url,
        amqp_url=AMQP_URL,
        instance_id=instance,
        poll_interval_seconds=0.2,
        publish_timeout_seconds=3.0,
    )
    edge_settings = EdgeSettings(
        port=free_port(),
        amqp_url=AMQP_URL,
        instance_id=instance,
        session_svc_url=f"http://127.0.0.1:{session_port}",
        message_svc_url=f"http://127.0.0.1:{message_port}",
        shutdown_grace_seconds=2.0,
        **jwt_settings,
    )
    async with (
        serving(sessions, session_port),
        serving(messages, message_port),
        serving(gateway, gateway_port),
        running_relay(relay_settings),
        running_edge(edge_settings) as edge,
    ):
        bob = await StompClient.open(
            f"ws://127.0.0.1:{edge_settings.port}/ws?access_token={make_token(chat.bob)}"
        )
        try:
            await bob.subscribe(f"/topic/session.{chat.id}", ("receipt", "subscribed"))
            receipt = await bob.next_frame(WITHIN)
            assert (receipt.command, receipt.header("receipt-id")) == ("RECEIPT", "subscribed")
            EXPORTER.clear()
            answer = await send(gateway_port, chat, make_token(chat.alice), "traced to the socket")
            assert answer.status_code == 200, answer.text
            frame = await bob.next_frame(WITHIN)
        finally:
            await bob.close()
        assert frame.command == "MESSAGE", frame
        assert frame.header("destination") == f"/topic/session.{chat.id}"
        assert frame.header("x-seq") == "1"
        assert msgspec.json.decode(frame.body)["content"] == "traced to the socket"

        # The publish's span ends with the broker's confirm, which may come after the push.
        def finished() -> list[ReadableSpan]:
            return [s for s in EXPORTER.get_finished_spans() if s.kind is SpanKind.PRODUCER]

        await eventually(finished, within=WITHIN, what="the publish's span")
        queue = edge.broker.queue_name

    assert await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox") == 0  # published
    row = await db_pool.fetchrow("SELECT id, headers FROM trace_outbox_copy")
    assert row is not None
    spans = EXPORTER.get_finished_spans()
    posts = [s for s in spans if _is_server(gateway_port)(s) and s.parent is None]
    assert len(posts) == 1, [s.name for s in spans]
    path = Trace(spans, _context(posts[0]).trace_id)

    # Everyone's parent is in the trace, up to the gateway's request (the only root).
    assert [s for s in path.spans if path.parent(s) is None] == posts
    gateway_in = posts[0]
    # message-svc stores the send in a grouped request (made for many callers, so in a trace
    # of its own); the send's own group is processed in a SERVER span of the caller's trace
    message_in = path.one(lambda s: s.kind is SpanKind.SERVER and s.name == "send group")
    assert not any(_is_server(message_port)(s) for s in path.spans)
    assert gateway_in in path.ancestors(message_in)  # through the gateway's CLIENT span
    assert path.parent(message_in) in [s for s in path.spans if s.kind is SpanKind.CLIENT]
    sql = [
        s
        for s in path.spans
        if s.kind is SpanKind.CLIENT and "INSERT INTO chat_messages" in _statement(s)
    ]
    assert sql
    assert all(message_in in path.ancestors(s) for s in sql)

    publish = path.one(lambda s: s.kind is SpanKind.PRODUCER)
    assert publish.name == f"{routing.EVENTS_EXCHANGE} publish"
    assert message_in in path.ancestors(publish)
    # its parent is the span that wrote the outbox row's traceparent
    assert publish.parent is not None
    assert _outbox_traceparent(row).split("-")[2] == f"{publish.parent.span_id:016x}"
    assert publish.attributes is not None
    assert dict(publish.attributes) == {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": routing.EVENTS_EXCHANGE,
        "messaging.rabbitmq.destination.routing_key": routing.session_key(chat.id),
        "messaging.message.id": f"outbox-{row['id']}",
        "messaging.message.body.size": publish.attributes["messaging.message.body.size"],
        "chat.outbox.id": row["id"],
        "chat.outbox.attempt": 1,
    }
    assert publish.status.is_ok

    consume = path.one(lambda s: s.kind is SpanKind.CONSUMER)
    assert consume.name == f"{routing.EVENTS_EXCHANGE} process"
    assert path.parent(consume) is publish  # the relay's traceparent replaced the row's
    assert consume.attributes is not None
    assert consume.attributes["messaging.system"] == "rabbitmq"
    assert consume.attributes["messaging.destination.subscription.name"] == queue
    assert consume.attributes["messaging.message.id"] == f"outbox-{row['id']}"
    assert consume.attributes["chat.event"] == "message"

    push = path.one(lambda s: s.name == "ws push")
    assert path.parent(push) is consume
    assert push.attributes is not None
    assert push.attributes["chat.ws.subscriptions"] == 1  # Bob's one subscription
    assert push.attributes["messaging.message.id"] == f"{chat.id}:1"

    # In time, too: each hop starts after the one before it.
    hops = [gateway_in, message_in, publish, consume, push]
    starts = [s.start_time or 0 for s in hops]
    assert starts == sorted(starts)
