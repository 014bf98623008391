"""Limits, CORS and security headers of the gateway (in front of a real upstream)."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from redis.asyncio import Redis

from chat_common import routing
from gateway.app import create_app
from gateway.settings import Settings

from .test_gateway_proxy import free_port, upstream_server

REDIS_URL = "redis://127.0.0.1:6379/0"


@contextlib.asynccontextmanager
async def gateway(
    issuer_keys: Any, tmp_path: Any, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    public = tmp_path / "issuer.pem"
    public.write_bytes(issuer_keys.public_pem)
    port = free_port()
    values: dict[str, Any] = {
        "session_svc_url": f"http://127.0.0.1:{port}",
        "message_svc_url": f"http://127.0.0.1:{port}",
        "jwt_public_key_file": str(public),
        "jwt_issuer": "flairbit",
        "jwt_audience": "chat",
        "allowed_origins": ("http://app.example",),
        **overrides,
    }
    app = create_app(Settings(**values))
    async with upstream_server(port), LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=("203.0.113.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


async def test_a_flooding_user_is_429_while_another_is_served(
    issuer_keys: Any, tmp_path: Any, make_token: Any
) -> None:
    async with gateway(issuer_keys, tmp_path, user_burst=5, user_rate_per_second=0.01) as gw:
        flood = {"Authorization": f"Bearer {make_token('flood@example.com')}"}
        calm = {"Authorization": f"Bearer {make_token('calm@example.com')}"}
        answers = [await gw.get("/api/chat/sessions", headers=flood) for _ in range(8)]
        assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
        limited = answers[-1]
        assert limited.headers["content-type"] == "application/problem+json"
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["code"] == "RATE_LIMITED"
        assert (await gw.get("/api/chat/sessions", headers=calm)).status_code == 200


async def test_a_flooding_address_is_429_before_any_token_check(
    issuer_keys: Any, tmp_path: Any
) -> None:
    async with gateway(issuer_keys, tmp_path, ip_burst=3, ip_rate_per_second=0.01) as gw:
        answers = [await gw.get("/api/chat/sessions") for _ in range(5)]
        assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
        assert (await gw.get("/healthz")).status_code == 200  # probes are exempt


async def test_oversize_headers_are_431(issuer_keys: Any, tmp_path: Any) -> None:
    async with gateway(issuer_keys, tmp_path, max_header_bytes=2048) as gw:
        answer = await gw.get("/api/chat/sessions", headers={"x-junk": "a" * 4096})
    assert answer.status_code == 431
    assert answer.json()["code"] == "HEADERS_TOO_LARGE"


async def test_security_headers_and_cors(issuer_keys: Any, tmp_path: Any, make_token: Any) -> None:
    async with gateway(issuer_keys, tmp_path) as gw:
        answer = await gw.get(
            "/api/chat/sessions",
            headers={
                "Authorization": f"Bearer {make_token()}",
                "Origin": "http://app.example",
            },
        )
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["content-security-policy"] == (
            "default-src 'none'; frame-ancestors 'none'"
        )
        refused = await gw.get("/api/chat/sessions")  # problems carry them too
        assert refused.status_code == 401
        assert refused.headers["content-security-policy"] == (
            "default-src 'none'; frame-ancestors 'none'"
        )
        assert refused.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["access-control-allow-origin"] == "http://app.example"
        assert "Link" in answer.headers["access-control-expose-headers"]
        preflight = await gw.options(
            "/api/chat/message",
            headers={
                "Origin": "http://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert "POST" in preflight.headers["access-control-allow-methods"]
        foreign = await gw.options(
            "/api/chat/message",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in foreign.headers


async def test_redis_unreachable_degrades_to_this_gateways_own_limits(
    issuer_keys: Any, tmp_path: Any, make_token: Any
) -> None:
    """Redis down is down for every gateway: each meters alone meanwhile (a flood is still
    cut), promptly, instead of refusing every request."""
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        redis_url = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
        async with gateway(
            issuer_keys, tmp_path, redis_url=redis_url, user_burst=3, user_rate_per_second=0.01
        ) as gw:
            headers = {"Authorization": f"Bearer {make_token()}"}
            started = time.monotonic()
            answers = [await gw.get("/api/chat/sessions", headers=headers) for _ in range(5)]
            waited = time.monotonic() - started
            ready = await gw.get("/readyz")
    assert [a.status_code for a in answers] == [200] * 3 + [429] * 2
    # bounded, with a wide margin: a refused Redis costs no request a wait on its timeout
    assert waited < 5
    assert ready.status_code == 200


@pytest.mark.integration  # Redis/RabbitMQ of the machine
async def test_two_gateways_share_a_users_bucket_through_redis(
    issuer_keys: Any, tmp_path: Any, make_token: Any
) -> None:
    email = f"flood-{uuid.uuid4().hex[:12]}@example.com"
    shared = {
        "redis_url": REDIS_URL,
        "user_burst": 4,
        "user_rate_per_second": 0.01,
        "ip_burst": 10_000,
        "ip_rate_per_second": 100.0,
    }
    headers = {"Authorization": f"Bearer {make_token(email)}"}
    try:
        async with (
            gateway(issuer_keys, tmp_path, **shared) as one,
            gateway(issuer_keys, tmp_path, **shared) as two,
        ):
            answers = [
                await client.get("/api/chat/sessions", headers=headers)
                for client in (one, two, one, two, one, two)
            ]
    finally:
        redis = Redis.from_url(REDIS_URL)
        user = routing.user_key(email)
        assert await redis.exists(f"chat:gateway:user:{user}")  # the user key, no email
        await redis.delete(f"chat:gateway:user:{user}", "chat:gateway:ip:203.0.113.7")
        await redis.aclose()
    assert [a.status_code for a in answers] == [200] * 4 + [429] * 2
    assert int(answers[-1].headers["Retry-After"]) >= 1


async def test_opening_chats_has_its_own_tighter_limit(
    issuer_keys: Any, tmp_path: Any, make_token: Any
) -> None:
    async with gateway(issuer_keys, tmp_path, init_burst=3, init_rate_per_second=0.01) as gw:
        prober = {"Authorization": f"Bearer {make_token('prober@example.com')}"}
        body = {"toEmail": "someone@example.com", "intent": "dating"}
        answers = [await gw.post("/api/chat/init", json=body, headers=prober) for _ in range(5)]
        assert [a.status_code for a in answers] == [201] * 3 + [429] * 2  # the echo upstream
        assert answers[-1].json()["code"] == "RATE_LIMITED"
        assert "new chats" in answers[-1].json()["detail"]
        # the rest of the API is not held back by it
        assert (await gw.get("/api/chat/sessions", headers=prober)).status_code == 200
