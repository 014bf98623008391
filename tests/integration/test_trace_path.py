"""One message's trace: gateway (HTTP in, HTTP out) -> message-svc (HTTP in, PostgreSQL) -> the
outbox row's headers, which carry the same W3C traceparent on to RabbitMQ and the edge."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.types import ASGIApp

from chat_common import tracing
from gateway.app import create_app as gateway_app
from gateway.settings import Settings as GatewaySettings
from message_svc.app import create_app as message_app
from message_svc.settings import Settings as MessageSettings

EXPORTER = InMemorySpanExporter()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module", autouse=True)
def tracing_on() -> None:
    tracing.setup_tracing("trace-test", exporter=EXPORTER)


async def test_one_message_is_one_trace(
    db_pool: asyncpg.Pool, database_url: str, issuer_keys: Any, make_token: Any, tmp_path: Path
) -> None:
    public = tmp_path / "issuer.pem"
    public.write_bytes(issuer_keys.public_pem)
    jwt_settings: dict[str, Any] = {
        "jwt_public_key_file": str(public),
        "jwt_issuer": "flairbit",
        "jwt_audience": "chat",
    }
    session_id = uuid.uuid4()
    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    await db_pool.execute(
        "INSERT INTO chat_sessions (id, intent, profile_lo, profile_hi)"
        " VALUES ($1, 'dating', $2, $3)",
        session_id,
        low,
        high,
    )
    await db_pool.executemany(
        "INSERT INTO chat_participants (session_id, profile_id, user_email, display_name)"
        " VALUES ($1, $2, $3, $4)",
        [
            (session_id, low, "alice@example.com", "Alice"),
            (session_id, high, "bob@example.com", "Bob"),
        ],
    )
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
    async with (
        serving(messages, message_port),
        serving(gateway, gateway_port),
        httpx.AsyncClient() as client,
    ):
        answer = await client.post(
            f"http://127.0.0.1:{gateway_port}/api/chat/message",
            json={
                "sessionId": str(session_id),
                "content": "traced",
                "clientMessageId": str(uuid.uuid4()),
            },
            headers={"Authorization": f"Bearer {make_token('alice@example.com')}"},
        )
    assert answer.status_code == 200, answer.text
    spans = EXPORTER.get_finished_spans()
    gateway_span = next(s for s in spans if s.kind.name == "SERVER" and s.parent is None)
    trace_id = gateway_span.context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    kinds = {(s.kind.name, s.resource.attributes["service.name"]) for s in in_trace}
    assert ("CLIENT", "trace-test") in kinds  # the gateway's call to message-svc, and the SQL
    assert sum(1 for s in in_trace if s.kind.name == "SERVER") == 2  # gateway and message-svc
    assert any("INSERT" in s.name or "chat_messages" in str(s.attributes) for s in in_trace)
    row = await db_pool.fetchrow("SELECT headers FROM chat_message_outbox")
    traceparent = json.loads(row["headers"])["traceparent"]
    assert traceparent.split("-")[1] == f"{trace_id:032x}"
