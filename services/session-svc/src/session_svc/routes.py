"""HTTP routes of session-svc: parse, call the service, answer."""

from __future__ import annotations

import uuid
from typing import cast

from chat_common.dto import InitSessionRequest
from chat_common.errors import NotFound
from chat_common.web import bearer_token, json_response, parse_body
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .state import AppState


def state(request: Request) -> AppState:
    return cast(AppState, request.state.app)


async def _user(request: Request) -> str:
    identity = await state(request).users.identify(bearer_token(request))
    return identity.email


def _session_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["session_id"])
    except ValueError:
        raise NotFound("no such session", code="SESSION_NOT_FOUND") from None


async def init_session(request: Request) -> Response:
    user = await _user(request)
    body = await parse_body(request, InitSessionRequest, max_bytes=4096)
    view = await state(request).sessions.open_session(user, body)
    return json_response(view)


async def membership(request: Request) -> Response:
    user = await _user(request)
    answer = await state(request).sessions.membership(user, _session_id(request))
    return json_response(answer)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/chat/init", init_session, methods=["POST"]),
        Route("/internal/sessions/{session_id}/membership", membership, methods=["GET"]),
    ]
