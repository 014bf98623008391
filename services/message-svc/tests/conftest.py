"""message-svc running in-process against the test database and the real RabbitMQ."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.types import Receive, Scope, Send

from message_svc.app import create_app
from message_svc.settings import Settings
from message_svc.state import AppState


@dataclass(frozen=True)
class ChatSession:
    id: uuid.UUID
    a: str
    b: str
    a_profile: uuid.UUID
    b_profile: uuid.UUID


SessionFactory = Callable[..., Awaitable[ChatSession]]


@pytest.fixture
def new_session(db_pool: asyncpg.Pool) -> SessionFactory:
    """Insert a session between two users as session-svc would."""

    async def make(a: str = "alice@example.com", b: str = "bob@example.com") -> ChatSession:
        sid = uuid.uuid4()
        pa, pb = sorted([uuid.uuid4(), uuid.uuid4()])
        async with db_pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO chat_sessions (id, intent, profile_lo, profile_hi)"
                " VALUES ($1, 'dating', $2, $3)",
                sid,
                pa,
                pb,
            )
            await conn.executemany(
                "INSERT INTO chat_participants (session_id, profile_id, user_email, display_name)"
                " VALUES ($1, $2, $3, $4)",
                [(sid, pa, a, a.split("@")[0].title()), (sid, pb, b, b.split("@")[0].title())],
            )
        return ChatSession(sid, a, b, pa, pb)

    return make


@pytest.fixture
def settings_factory(
    database_url: str, issuer_keys: Any, tmp_path: Path
) -> Callable[..., Settings]:
    public = tmp_path / "issuer.pem"
    public.write_bytes(issuer_keys.public_pem)

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "jwt_public_key_file": str(public),
            "jwt_issuer": "flairbit",
            "jwt_audience": "chat",
            "consume_ws_sends": False,
            "send_burst": 10_000,
            "send_rate_per_second": 10_000.0,
            **overrides,
        }
        return Settings(**values)

    return make


@pytest.fixture
async def client(settings_factory: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_factory())
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://message-svc") as c:
            yield c


@pytest.fixture
def as_user(make_token: Any) -> Callable[[str], dict[str, str]]:
    def headers(email: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(email)}"}

    return headers


@dataclass(frozen=True)
class Served:
    client: httpx.AsyncClient
    state: AppState


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Served]:
    """The app in-process, with the state its lifespan opened (its pool, its service)."""
    app = create_app(settings)
    opened: dict[str, Any] = {}

    async def capturing(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            opened.update(state=scope["state"])
        await app(scope, receive, send)

    async with LifespanManager(capturing) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://message-svc") as c:
            yield Served(c, opened["state"]["app"])
