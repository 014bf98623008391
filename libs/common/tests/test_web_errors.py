"""A database that is down or drops the connection answers 503 with a problem body, not 500:
the database adapter (``chat_common.db``) reports it as ``DatabaseUnavailable``, a
``ChatError``. Anything else the driver or a socket raises outside an adapter is a bug: 500,
never passed off as "the database did not answer" (the gateway has no database)."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_common import db
from chat_common.problems import PROBLEM_CONTENT_TYPE
from chat_common.web import EXCEPTION_HANDLERS
from chat_testing.waiting import eventually


def app_with(endpoint: Route, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    app = Starlette(routes=[endpoint], exception_handlers=EXCEPTION_HANDLERS)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_a_refused_database_connection_is_503() -> None:
    async def refused(request: Request) -> Response:
        await db.create_pool("postgresql://postgres@127.0.0.1:1/none")
        return Response("unreachable")

    async with app_with(Route("/", refused)) as client:
        answer = await client.get("/")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["code"] == "DEPENDENCY_UNAVAILABLE"
    assert "127.0.0.1" not in answer.text  # the driver's message stays out of the answer


async def test_a_connection_the_server_ends_is_503(database_url: str) -> None:
    pool = await db.create_pool(database_url, max_size=2)

    async def terminated(request: Request) -> Response:
        async with pool.acquire() as conn:
            pid = conn.get_server_pid()

            async def sleeping() -> bool:
                return bool(
                    await pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
                        " AND state = 'active' AND query LIKE '%pg_sleep%'",
                        pid,
                    )
                )

            async def end_it() -> None:
                await eventually(sleeping, poll=0.02, what="the query is running")
                await pool.execute("SELECT pg_terminate_backend($1)", pid)

            ending = asyncio.create_task(end_it())
            try:
                await conn.fetchval("SELECT pg_sleep(5)")  # ended by the server meanwhile
            finally:
                await ending
        return Response("unreachable")

    try:
        async with app_with(Route("/", terminated)) as client:
            answer = await client.get("/")
    finally:
        await pool.close()
    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == "DEPENDENCY_UNAVAILABLE"


@pytest.mark.parametrize(
    "error",
    [ConnectionRefusedError("a socket nobody translated"), RuntimeError("bug")],
    ids=["socket-error-outside-an-adapter", "programming-error"],
)
async def test_what_no_adapter_translated_is_a_500(error: Exception) -> None:
    """Not passed off as a database outage: a socket error outside an adapter is a bug."""

    async def broken(request: Request) -> Response:
        raise error

    async with app_with(Route("/", broken), raise_app_exceptions=False) as client:
        answer = await client.get("/")
    assert answer.status_code == 500
    assert answer.json()["code"] == "INTERNAL"


async def test_the_500s_log_line_names_no_sockjs_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("bug")

    caplog.set_level(logging.ERROR, logger="chat_common.web")
    route = Route("/ws/{server}/{session}/{transport}", broken, methods=["POST"])
    async with app_with(route, raise_app_exceptions=False) as client:
        answer = await client.post("/ws/123/k3j9x0qz/xhr_send")
    assert answer.status_code == 500
    [record] = [r for r in caplog.records if r.name == "chat_common.web"]
    assert record.getMessage().startswith("unhandled error on POST /ws/123/s-")
    assert "k3j9x0qz" not in caplog.text
