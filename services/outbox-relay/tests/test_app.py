"""The process around the relay: health, readiness and metrics, the relay in the lifespan."""

from __future__ import annotations

import uuid

import httpx
from asgi_lifespan import LifespanManager

from chat_testing.tcpproxy import TcpProxy
from outbox_relay.app import create_app

from .conftest import Insert, Observed, relay_settings


async def test_the_app_runs_the_relay_and_reports_on_it(
    database_url: str, insert: Insert, observed: Observed
) -> None:
    app = create_app(relay_settings(database_url))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            await insert([uuid.uuid4()])
            await observed.wait_for(1, within=5)
            text = (await client.get("/metrics")).text
    for name in (
        "chat_outbox_pending_rows",
        "chat_outbox_oldest_pending_seconds",
        "chat_outbox_publish_latency_seconds_bucket",
        "chat_outbox_published_total",
        "chat_outbox_retries_total",
        "chat_outbox_dead_total",
    ):
        assert name in text


async def test_readiness_fails_while_the_broker_is_unreachable(database_url: str) -> None:
    async with TcpProxy("127.0.0.1", 5672) as proxy:
        proxy.cut()
        settings = relay_settings(
            database_url, amqp_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        )
        app = create_app(settings)  # starts anyway: the relay keeps trying
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
                assert (await client.get("/healthz")).status_code == 200
                answer = await client.get("/readyz")
                assert answer.status_code == 503
                assert "rabbitmq" in answer.text
