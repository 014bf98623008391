"""A database that is down or drops the connection answers 503 with a problem body, not 500."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_common.problems import PROBLEM_CONTENT_TYPE
from chat_common.web import EXCEPTION_HANDLERS


def app_with(endpoint: Route) -> httpx.AsyncClient:
    app = Starlette(routes=[endpoint], exception_handlers=EXCEPTION_HANDLERS)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_a_refused_database_connection_is_503() -> None:
    async def refused(request: Request) -> Response:
        await asyncpg.connect("postgresql://postgres@127.0.0.1:1/none", timeout=2)
        return Response("unreachable")

    async with app_with(Route("/", refused)) as client:
        answer = await client.get("/")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["code"] == "DEPENDENCY_UNAVAILABLE"


async def test_a_connection_the_server_ends_is_503(database_url: str) -> None:
    async def terminated(request: Request) -> Response:
        conn = await asyncpg.connect(database_url)
        killer = await asyncpg.connect(database_url)
        try:

            async def end_it() -> None:
                await asyncio.sleep(0.2)
                await killer.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())

            ending = asyncio.create_task(end_it())
            try:
                await conn.fetchval("SELECT pg_sleep(5)")  # ended by the server meanwhile
            finally:
                await ending
        finally:
            conn.terminate()
            await killer.close()
        return Response("unreachable")

    async with app_with(Route("/", terminated)) as client:
        answer = await client.get("/")
    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == "DEPENDENCY_UNAVAILABLE"


async def test_a_programming_error_is_still_500() -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("bug")

    app = Starlette(routes=[Route("/", broken)], exception_handlers=EXCEPTION_HANDLERS)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.get("/")
    assert answer.status_code == 500
    assert answer.json()["code"] == "INTERNAL"
