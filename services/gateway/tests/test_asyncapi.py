"""The AsyncAPI document of the STOMP API, as the gateway serves it: ``/asyncapi.json`` next to
``/openapi.json``, linked from ``/docs``, and valid for the reference parser
(``@asyncapi/parser``, run by tests/asyncapi/validate.mjs under Node.js) with every destination
of ws-edge's table in the parsed model. That the file is a fresh build of ws-edge's code is
ws-edge's test (services/ws-edge/tests/test_asyncapi.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from subprocess import PIPE
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.apidoc import ASYNCAPI_FILE
from gateway.app import create_app
from gateway.settings import Settings
from ws_edge import destinations

from .loopback import serving

REPO = Path(__file__).resolve().parents[3]
PARSER_DIR = REPO / "tests" / "asyncapi"
ERROR = 0  # a diagnostic's severity: 0 error, 1 warning, 2 information, 3 hint

UPSTREAM_DOCUMENT = {
    "openapi": "3.1.0",
    "paths": {
        "/api/chat/sessions": {
            "get": {"summary": "the caller's sessions", "responses": {"200": {"description": "OK"}}}
        }
    },
    "components": {"schemas": {}},
}


async def upstream_openapi(request: Request) -> JSONResponse:
    return JSONResponse(UPSTREAM_DOCUMENT)


@contextlib.asynccontextmanager
async def gateway(issuer_keys: Any, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway, its upstreams answering only their API document."""
    public = tmp_path / "issuer.pem"
    public.write_bytes(issuer_keys.public_pem)
    upstream = Starlette(routes=[Route("/openapi.json", upstream_openapi)])
    async with serving(upstream) as served:
        url = f"http://127.0.0.1:{served.port}"
        settings = Settings(
            session_svc_url=url, message_svc_url=url, jwt_public_key_file=str(public)
        )
        async with LifespanManager(create_app(settings)) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as c:
                yield c


async def test_the_gateway_serves_the_document_and_links_it_from_docs(
    issuer_keys: Any, tmp_path: Path
) -> None:
    async with gateway(issuer_keys, tmp_path) as gw:
        document = await gw.get("/asyncapi.json")
        page = await gw.get("/docs")
    assert document.status_code == 200
    assert document.headers["content-type"] == "application/json"
    assert document.content == ASYNCAPI_FILE.read_bytes()
    assert document.json()["asyncapi"] == "3.0.0"
    assert page.status_code == 200
    assert "<a href=/asyncapi.json>" in page.text
    assert "<a href=/openapi.json>" in page.text
    assert "/api/chat/sessions" in page.text


@pytest.fixture(scope="module")
def node() -> str:
    """Node.js, with @asyncapi/parser installed in tests/asyncapi (``npm ci`` when missing)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "Node.js and npm are needed for the AsyncAPI parser: apt-get install -y nodejs npm",
            pytrace=False,
        )
    if not (PARSER_DIR / "node_modules" / "@asyncapi" / "parser").exists():
        subprocess.run(
            # no install scripts: the parser needs none (one dependency's would phone home)
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--silent"],
            cwd=PARSER_DIR,
            check=True,
            timeout=300,
        )
    return node


async def test_the_served_document_is_valid_asyncapi_with_every_destination(
    node: str, issuer_keys: Any, tmp_path: Path
) -> None:
    async with gateway(issuer_keys, tmp_path) as gw:
        served = (await gw.get("/asyncapi.json")).content
    path = tmp_path / "asyncapi.json"
    path.write_bytes(served)
    run = await asyncio.create_subprocess_exec(
        node, "validate.mjs", str(path), cwd=PARSER_DIR, stdout=PIPE, stderr=PIPE
    )
    async with asyncio.timeout(120):
        out, err = await run.communicate()
    assert run.returncode == 0, err.decode()
    report = json.loads(out)
    errors = [d for d in report["diagnostics"] if d["severity"] == ERROR]
    assert errors == [], json.dumps(errors, indent=2)
    assert report["parsed"]
    assert report["version"] == "3.0.0"
    parsed = set(report["channels"])
    for destination in (*destinations.SUBSCRIBE, *destinations.SEND):
        assert destination in parsed, f"{destination} is not a channel of the parsed document"
    actions = {op["action"] for op in report["operations"]}
    assert actions == {"send", "receive"}
