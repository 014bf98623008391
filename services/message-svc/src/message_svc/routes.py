"""HTTP routes of message-svc: parse, call the service, answer."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import cast
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from chat_common.dto import MarkRequest, SendMessageRequest
from chat_common.errors import InvalidInput, NotFound
from chat_common.web import bearer_token, json_response, parse_body

from .service import MAX_PAGE
from .state import AppState


def state(request: Request) -> AppState:
    return cast(AppState, request.state.app)


async def _user(request: Request) -> str:
    return (await state(request).users.identify(bearer_token(request))).email


def _session_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["session_id"])
    except ValueError:
        raise NotFound("no such session", code="SESSION_NOT_FOUND") from None


def _int_param(request: Request, name: str, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}", field=name)
    return int(raw)


async def send_message(request: Request) -> Response:
    user = await _user(request)
    body = await parse_body(request, SendMessageRequest, max_bytes=256 * 1024)
    sent = await state(request).messages.send(user, body)
    headers = {"Idempotent-Replayed": "true"} if sent.replayed else None
    return json_response(sent.message, headers=headers)


async def history(request: Request) -> Response:
    user = await _user(request)
    session_id = _session_id(request)
    limit = _int_param(request, "limit", 1, MAX_PAGE) or state(request).history_default_limit
    before = _int_param(request, "before", 1, 2**62)
    after = _int_param(request, "after", 0, 2**62)
    page = await state(request).messages.history(
        user, session_id, limit=limit, before=before, after=after
    )
    headers: dict[str, str] = {}
    if len(page.messages) == limit:
        if after is not None:
            query = {"limit": limit, "after": page.messages[0].seq}
        else:
            query = {"limit": limit, "before": page.messages[-1].seq}
        if query.get("before") != 1:
            headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return json_response(page, headers=headers or None)


async def unread(request: Request) -> Response:
    user = await _user(request)
    return json_response(await state(request).messages.unread(user, _session_id(request)))


async def sessions(request: Request) -> Response:
    user = await _user(request)
    return json_response(await state(request).messages.sessions(user))


def _mark(kind: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        user = await _user(request)
        session_id = _session_id(request)
        body = await parse_body(request, MarkRequest, max_bytes=1024)
        marks = await state(request).messages.mark(user, session_id, kind, body.up_to_seq)
        return json_response(marks)

    return endpoint


def routes() -> list[BaseRoute]:
    return [
        Route("/api/chat/message", send_message, methods=["POST"]),
        Route("/api/chat/sessions", sessions, methods=["GET"]),
        Route("/api/chat/{session_id}/history", history, methods=["GET"]),
        Route("/api/chat/{session_id}/unread", unread, methods=["GET"]),
        Route("/api/chat/{session_id}/read", _mark("read"), methods=["POST"]),
        Route("/api/chat/{session_id}/delivered", _mark("delivered"), methods=["POST"]),
    ]
