"""The public API's documents and the page that renders them (``/docs``).

- ``/openapi.json``: the REST API, merged from the services' own documents. Only public paths
  are kept; the merge is cached once every upstream answered.
- ``/asyncapi.json``: the STOMP API at ``/ws`` (AsyncAPI 3.0), the file shipped with this
  package (:data:`ASYNCAPI_FILE`). ws-edge's code generates it (``make asyncapi``), and a
  ws-edge test fails when it differs from a fresh build, so the gateway serves the edge's
  contract without importing or asking the edge.
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from chat_common.errors import DependencyUnavailable

PUBLIC_PREFIXES = ("/api/", "/internal/flairbit/")
ASYNCAPI_FILE = Path(__file__).with_name("asyncapi.json")


@dataclass(frozen=True, slots=True)
class StompDocument:
    """The AsyncAPI document as served (``raw``) and as read (``document``, for ``/docs``)."""

    raw: bytes
    document: dict[str, Any]


def stomp_document(path: Path = ASYNCAPI_FILE) -> StompDocument:
    raw = path.read_bytes()
    return StompDocument(raw, json.loads(raw))


def merge(documents: Iterable[dict[str, Any]], *, title: str, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    schemes: dict[str, Any] = {}
    for doc in documents:
        for path, item in doc.get("paths", {}).items():
            if path.startswith(PUBLIC_PREFIXES):
                paths.setdefault(path, {}).update(item)
        components = doc.get("components", {})
        schemas.update(components.get("schemas", {}))
        schemes.update(components.get("securitySchemes", {}))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "The chat backend's public REST API, served by the gateway. "
            "Errors are RFC 9457 problem documents. The WebSocket API is STOMP 1.2 at /ws.",
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas, "securitySchemes": schemes},
    }


class ApiDocument:
    def __init__(self, client: httpx.AsyncClient, upstreams: Iterable[str]) -> None:
        self._client = client
        self._upstreams = tuple(upstreams)
        self._cached: dict[str, Any] | None = None

    async def get(self) -> dict[str, Any]:
        if self._cached is None:
            try:
                answers = await asyncio.gather(
                    *(self._client.get(f"{u.rstrip('/')}/openapi.json") for u in self._upstreams)
                )
                for answer in answers:
                    answer.raise_for_status()
            except httpx.HTTPError as exc:
                raise DependencyUnavailable(
                    f"a service did not give its API document: {type(exc).__name__}"
                ) from None
            self._cached = merge(
                (a.json() for a in answers), title="Chat backend API", version="1.0.0"
            )
        return self._cached


def render(doc: dict[str, Any], stomp: Mapping[str, Any]) -> str:
    """A plain HTML page listing every operation with its body and answer schemas, then every
    STOMP destination with its frames and events."""
    schemas = doc["components"]["schemas"]
    rows = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ok = next(iter(op["responses"].items()))
            answer = ok[1].get("content", {}).get("application/json", {})
            rows.append(
                "<section><h2><code>{m} {p}</code></h2><p>{s}</p>{params}{b}{a}"
                "<p class=errors>Errors: {e}</p></section>".format(
                    m=method.upper(),
                    p=html.escape(path),
                    s=html.escape(op.get("summary", "")),
                    params=_params(op.get("parameters", [])),
                    b=_schema("Body", body.get("schema"), schemas),
                    a=_schema(f"Answer {ok[0]}", answer.get("schema"), schemas),
                    e=", ".join(c for c in op["responses"] if not c.startswith("2")),
                )
            )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Chat backend API</title>"
        "<style>body{font:15px system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
        "padding:0 1rem}pre{background:#f4f4f4;padding:.5rem;overflow:auto}"
        "h2{font-size:1.05rem}.errors{color:#666}</style>"
        "<h1>Chat backend API</h1><p>The machine-readable documents are "
        "<a href=/openapi.json>/openapi.json</a> (OpenAPI 3.1, the REST API) and "
        "<a href=/asyncapi.json>/asyncapi.json</a> (AsyncAPI 3.0, the STOMP API at "
        "<code>/ws</code>).</p>" + "".join(rows) + _stomp(stomp)
    )


def _stomp(doc: Mapping[str, Any]) -> str:
    """The STOMP destinations: the frame a client sends there, and what it carries."""
    schemas = doc["components"]["schemas"]
    messages = doc["components"]["messages"]
    rows = []
    for op in doc["operations"].values():
        channel = doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]
        if channel.get("address") is None:  # RECEIPT and ERROR: the connection's own frames
            continue
        frame = "SUBSCRIBE" if op["action"] == "send" else "SEND"
        names = [ref["$ref"].rsplit("/", 1)[-1] for ref in channel["messages"].values()]
        if frame == "SEND":
            [name] = names
            carried = _schema("Body", messages[name].get("payload"), schemas)
        else:
            carried = "<ul>{}</ul>".format(
                "".join(
                    f"<li><code>x-event: {html.escape(messages[n]['name'])}</code> "
                    f"{html.escape(messages[n].get('summary', ''))}</li>"
                    for n in names
                )
            )
        rows.append(
            "<section><h2><code>{f} {a}</code></h2><p>{d}</p>{c}</section>".format(
                f=frame,
                a=html.escape(channel["address"]),
                d=html.escape(channel.get("description", "")),
                c=carried,
            )
        )
    return (
        "<h1>WebSocket API: STOMP 1.2 at <code>/ws</code></h1><p>Every event, header, body "
        "and error is in <a href=/asyncapi.json>/asyncapi.json</a>.</p>" + "".join(rows)
    )


def _params(params: list[dict[str, Any]]) -> str:
    if not params:
        return ""
    items = "".join(
        f"<li><code>{html.escape(p['name'])}</code> ({p['in']}) "
        f"<code>{html.escape(json.dumps(p['schema']))}</code></li>"
        for p in params
    )
    return f"<ul>{items}</ul>"


def _schema(label: str, schema: dict[str, Any] | None, schemas: dict[str, Any]) -> str:
    if not schema:
        return ""
    name = schema.get("$ref", "").rsplit("/", 1)[-1]
    shown = schemas.get(name, schema)
    pretty = html.escape(json.dumps(shown, indent=2))
    return f"<h3>{label}: {html.escape(name)}</h3><pre>{pretty}</pre>"
