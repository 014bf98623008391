"""The session-svc of the presence, block and erasure tests: served in-process with Redis (the
machine's, database 0, as the root conftest's ``redis`` client), its presence keys under a
prefix of the test's own. Test files that need another configuration define their own
``client``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from .test_sessions_api import instance

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> str:
    return f"test:presence:{uuid.uuid4().hex}:"


@pytest.fixture
async def client(
    db_pool: asyncpg.Pool, database_url: str, flairbit_reset: Any, prefix: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with instance(
        database_url, flairbit_reset, redis_url=REDIS, presence_key_prefix=prefix
    ) as c:
        yield c
