"""OpenAPI 3.1 from the routes themselves: each route is declared with an :class:`Operation`
naming its msgspec body and answer types, and the document is generated from those types
(``msgspec.json.schema_components``), so the schema and the validation never drift apart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .problems import PROBLEM_CONTENT_TYPE, Problem

Endpoint = Callable[[Request], Awaitable[Response]]
REF = "#/components/schemas/{name}"


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # "path" | "query"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    summary: str
    body: type | None = None
    answer: type | None = None
    status: int = 200
    also: tuple[int, ...] = ()  # further success statuses, with the same answer
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = (400, 401, 403, 404, 422, 429)
    # this route's own description of an error status, where it says more than the usual one
    reasons: dict[int, str] = field(default_factory=dict)
    security: str | None = "userJwt"
    tags: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    # JSON examples of the request body and of the answer (shown in /docs)
    body_example: Any = None
    answer_example: Any = None


def routes(pairs: Iterable[tuple[Operation, Endpoint]]) -> list[Route]:
    """Starlette routes for declared operations (one Route per operation)."""
    return [Route(op.path, endpoint, methods=[op.method]) for op, endpoint in pairs]


def document(title: str, version: str, operations: Sequence[Operation]) -> dict[str, Any]:
    types: list[Any] = [Problem]
    for op in operations:
        types += [t for t in (op.body, op.answer) if t is not None]
    refs, components = msgspec.json.schema_components(types, ref_template=REF)
    ref_of = {t: r for t, r in zip(types, refs, strict=True)}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": _operation_id(op),
            "tags": list(op.tags),
            "responses": _responses(op, ref_of),
        }
        if op.params:
            entry["parameters"] = [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.required or p.where == "path",
                    "schema": p.schema,
                    **({"description": p.description} if p.description else {}),
                }
                for p in op.params
            ]
        if op.body is not None:
            media: dict[str, Any] = {"schema": ref_of[op.body]}
            if op.body_example is not None:
                media["example"] = op.body_example
            entry["requestBody"] = {"required": True, "content": {"application/json": media}}
        if op.security:
            entry["security"] = [{op.security: []}]
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "userJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "flairbitJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


def _operation_id(op: Operation) -> str:
    words = [w for w in op.path.replace("{", "").replace("}", "").split("/") if w]
    return op.method.lower() + "".join(w[:1].upper() + w[1:] for w in words if w != "api")


def _responses(op: Operation, ref_of: dict[Any, Any]) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "OK" if op.status < 300 else "Done"}
    if op.answer is not None:
        media: dict[str, Any] = {"schema": ref_of[op.answer]}
        if op.answer_example is not None:
            media["example"] = op.answer_example
        ok["content"] = {"application/json": media}
    if op.headers:
        ok["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in op.headers.items()
        }
    answers: dict[str, Any] = {str(op.status): ok}
    for status in op.also:
        answers[str(status)] = {**ok, "description": _REASONS.get(status, ok["description"])}
    problem = {"content": {PROBLEM_CONTENT_TYPE: {"schema": ref_of[Problem]}}}
    for status in sorted({*op.errors, *ALWAYS}):
        reason = op.reasons.get(status) or _REASONS.get(status, "Error")
        answers[str(status)] = {"description": reason, **problem}
    return answers


# What any route may answer: the gateway's limits and failing dependencies.
ALWAYS = (413, 429, 431, 500, 502, 503, 504)

_REASONS = {
    201: "Created",
    431: "Request headers too large",
    502: "A dependency failed",
    400: "Malformed request",
    401: "Missing or invalid token",
    403: "Not a participant",
    404: "Unknown session, user or profile",
    409: "Conflicts with stored state",
    413: "Content too large",
    422: "Invalid field",
    429: "Rate limited (see Retry-After)",
    500: "Internal error",
    503: "A dependency is unavailable",
    504: "A dependency timed out",
}


def openapi_route(title: str, version: str, operations: Sequence[Operation]) -> Route:
    doc = document(title, version, operations)

    async def serve(request: Request) -> Response:
        return JSONResponse(doc)

    return Route("/openapi.json", serve, methods=["GET"])
