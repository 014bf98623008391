"""RFC 9457 problem details for the HTTP API, and the map from domain errors to statuses."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:  # the responses need chat-common[web]; the rest is core
    from starlette.responses import Response

from . import errors

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://chat.example/problems/"


class MalformedBody(errors.InvalidInput):
    """The body is not the JSON document the route expects (HTTP 400)."""

    code = "MALFORMED_BODY"
    title = "Malformed request body"


class Problem(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None
    instance: str | None = None


# Most specific classes first: the first isinstance match wins.
_STATUS: tuple[tuple[type[errors.ChatError], int], ...] = (
    (MalformedBody, 400),
    (errors.ContentTooLarge, 413),
    (errors.InvalidInput, 422),
    (errors.AuthenticationFailed, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.RateLimited, 429),
    (errors.DependencyTimeout, 504),
    (errors.DependencyUnavailable, 503),
    (errors.DependencyError, 502),
)


def status_for(exc: errors.ChatError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def problem(
    status: int, *, title: str, detail: str, code: str, field: str | None = None
) -> Problem:
    return Problem(
        type=PROBLEM_TYPE_BASE + code.lower().replace("_", "-"),
        title=title,
        status=status,
        detail=detail,
        code=code,
        field=field,
    )


def problem_of(exc: errors.ChatError) -> Problem:
    """The problem document a domain error answers with."""
    return problem(
        status_for(exc), title=exc.title, detail=exc.detail, code=exc.code, field=exc.field
    )


def problem_response(
    status: int,
    *,
    title: str,
    detail: str,
    code: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = problem(status, title=title, detail=detail, code=code, field=field)
    from starlette.responses import Response

    return Response(
        msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def retry_after(exc: errors.ChatError) -> int | None:
    """Seconds the client should wait before trying again (``Retry-After``), if any."""
    if isinstance(exc, errors.RateLimited):
        return max(1, math.ceil(exc.retry_after))
    if status_for(exc) == 503:
        return 1  # a dependency is down or a breaker is open: worth trying again, shortly
    return None


def error_response(exc: errors.ChatError) -> Response:
    headers: dict[str, str] = {}
    status = status_for(exc)
    wait = retry_after(exc)
    if wait is not None:
        headers["Retry-After"] = str(wait)
    if isinstance(exc, errors.AuthenticationFailed):
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return problem_response(
        status,
        title=exc.title,
        detail=exc.detail,
        code=exc.code,
        field=exc.field,
        headers=headers or None,
    )
