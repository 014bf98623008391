"""HTTP routes of session-svc: parse, call the service, answer."""

from __future__ import annotations

import uuid
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from chat_common import openapi
from chat_common.dto import InitSessionRequest, MatchSession, ProfileChanged, SessionView
from chat_common.errors import AuthenticationFailed, NotFound
from chat_common.identity import normalise_email
from chat_common.openapi import Endpoint, Operation, Param
from chat_common.presence import Peers, PresenceAnswer
from chat_common.web import bearer_token, json_response, parse_body

from .presence import MAX_ASKED, asked_emails
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


async def peers(request: Request) -> Response:
    """For the edges (with the user's own token; not routed by the gateway)."""
    user = await _user(request)
    return json_response(Peers(await state(request).presence.peers(user)))


async def presence(request: Request) -> Response:
    user = await _user(request)
    emails = asked_emails(request.query_params.getlist("emails"))
    return json_response(await state(request).presence.presence(user, emails))


async def _flairbit(request: Request) -> None:
    """Only FlairBit's service JWT opens /internal/flairbit/*; user tokens fail its audience."""
    claims = await state(request).flairbit_tokens.verify_async(bearer_token(request))
    if claims.subject != "flairbit":
        raise AuthenticationFailed("not a FlairBit service token", code="TOKEN_INVALID")


async def profile_changed(request: Request) -> Response:
    await _flairbit(request)
    body = await parse_body(request, ProfileChanged, max_bytes=4096)
    email = normalise_email(body.email)
    await state(request).invalidations.changed(email, body.intent)
    return Response(status_code=204)


async def match_session(request: Request) -> Response:
    await _flairbit(request)
    body = await parse_body(request, MatchSession, max_bytes=4096)
    view = await state(request).sessions.open_between(
        normalise_email(body.first_email, field="firstEmail"),
        normalise_email(body.second_email, field="secondEmail"),
        body.intent,
    )
    return json_response(view)


SESSION_ID = Param("sessionId", "path", {"type": "string", "format": "uuid"})

OPERATIONS: tuple[tuple[Operation, Endpoint], ...] = (
    (
        Operation(
            "POST",
            "/api/chat/init",
            "Open (or find) the caller's session with another user for an intent",
            body=InitSessionRequest,
            answer=SessionView,
            errors=(400, 401, 404, 413, 422, 429, 503, 504),
            tags=("sessions",),
        ),
        init_session,
    ),
    (
        Operation(
            "GET",
            "/api/chat/presence",
            "Whether users who share a session with the caller are online, and when they were"
            " last seen (403 NOT_A_PEER for anyone else)",
            answer=PresenceAnswer,
            params=(
                Param(
                    "emails",
                    "query",
                    {"type": "string"},
                    f"comma-separated emails (or the parameter repeated), at most {MAX_ASKED}",
                    required=True,
                ),
            ),
            errors=(400, 401, 403, 422, 429, 503),
            tags=("presence",),
            answer_example={
                "presence": [
                    {
                        "email": "bob@example.com",
                        "online": False,
                        "lastSeen": "2026-01-02T10:00:00Z",
                    }
                ]
            },
        ),
        presence,
    ),
    (
        Operation(
            "POST",
            "/internal/flairbit/profile-changed",
            "FlairBit: a user's profile changed; drop what chat cached of it",
            body=ProfileChanged,
            status=204,
            errors=(400, 401, 422),
            security="flairbitJwt",
            tags=("flairbit",),
        ),
        profile_changed,
    ),
    (
        Operation(
            "POST",
            "/internal/flairbit/sessions",
            "FlairBit: open the session of two matched users",
            body=MatchSession,
            answer=SessionView,
            errors=(400, 401, 404, 422, 503, 504),
            security="flairbitJwt",
            tags=("flairbit",),
        ),
        match_session,
    ),
)


def routes() -> list[BaseRoute]:
    return [
        *openapi.routes(OPERATIONS),
        Route("/internal/sessions/{session_id}/membership", membership, methods=["GET"]),
        Route("/internal/peers", peers, methods=["GET"]),
        openapi.openapi_route("session-svc", "1", [op for op, _ in OPERATIONS]),
    ]
