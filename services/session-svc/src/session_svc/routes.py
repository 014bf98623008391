"""HTTP routes of session-svc: parse, call the service, answer."""

from __future__ import annotations

import uuid
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from chat_common import openapi
from chat_common.dto import (
    BlockState,
    ErasureReport,
    InitSessionRequest,
    MatchSession,
    ProfileChanged,
    SessionView,
    UserDeleted,
)
from chat_common.errors import AuthenticationFailed, NotFound
from chat_common.identity import normalise_email
from chat_common.keys import KEY_ID_PATTERN, PublicKeyView, PublishKeyRequest, SessionKeys, UserKeys
from chat_common.openapi import Endpoint, Operation, Param
from chat_common.presence import Peers, PresenceAnswer
from chat_common.web import bearer_token, json_response, parse_body

from . import keys
from .presence import MAX_ASKED, asked_emails
from .state import AppState


def state(request: Request) -> AppState:
    return cast(AppState, request.state.app)


async def _user(request: Request, *, stores: bool = False) -> str:
    """The caller, from the token; a deleted user's token issued before the erasure is refused
    (401 USER_DELETED). While Redis cannot say, a route that ``stores`` something of the
    caller answers 503; the others go on (a deleted user has nothing left for them to reach)."""
    app = state(request)
    identity = await app.users.identify(bearer_token(request))
    if app.erased is not None:
        await app.erased.check(identity, fail_closed=stores)
    return identity.email


async def _edge_user(request: Request) -> str:
    """The caller of an internal route the edges ask with their user's token: the edge
    refused a deleted user's token at CONNECT, so no denial is looked up here (these are asked
    on subscriptions and presence, and must cost no Redis round trip)."""
    identity = await state(request).users.identify(bearer_token(request))
    return identity.email


def _session_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["session_id"])
    except ValueError:
        raise NotFound("no such session", code="SESSION_NOT_FOUND") from None


async def init_session(request: Request) -> Response:
    user = await _user(request, stores=True)
    body = await parse_body(request, InitSessionRequest, max_bytes=4096)
    view = await state(request).sessions.open_session(user, body)
    return json_response(view)


async def membership(request: Request) -> Response:
    user = await _edge_user(request)
    answer = await state(request).sessions.membership(user, _session_id(request))
    return json_response(answer)


async def peers(request: Request) -> Response:
    """For the edges (with the user's own token; not routed by the gateway)."""
    user = await _edge_user(request)
    return json_response(Peers(await state(request).presence.peers(user)))


async def presence(request: Request) -> Response:
    user = await _user(request)
    emails = asked_emails(request.query_params.getlist("emails"))
    return json_response(await state(request).presence.presence(user, emails))


async def put_key(request: Request) -> Response:
    user = await _user(request, stores=True)
    key_id = keys.key_id(request.path_params["keyId"])
    body = await parse_body(request, PublishKeyRequest, max_bytes=4096)
    stored, change = await state(request).keys.publish(user, key_id, body)
    return json_response(stored, status_code=201 if change == "added" else 200)


async def delete_key(request: Request) -> Response:
    user = await _user(request)
    await state(request).keys.revoke(user, keys.key_id(request.path_params["keyId"]))
    return Response(status_code=204)


async def own_keys(request: Request) -> Response:
    user = await _user(request)
    return json_response(await state(request).keys.own(user))


async def session_keys(request: Request) -> Response:
    user = await _user(request)
    try:
        session_id = uuid.UUID(request.path_params["sessionId"])
    except ValueError:
        raise NotFound("no such session", code="SESSION_NOT_FOUND") from None
    return json_response(await state(request).keys.of_session(user, session_id))


async def block(request: Request) -> Response:
    user = await _user(request)
    answer = await state(request).blocks.change(user, _path_session(request), "block")
    return json_response(answer)


async def unblock(request: Request) -> Response:
    user = await _user(request)
    answer = await state(request).blocks.change(user, _path_session(request), "unblock")
    return json_response(answer)


def _path_session(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["sessionId"])
    except ValueError:
        raise NotFound("no such session", code="SESSION_NOT_FOUND") from None


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


async def user_deleted(request: Request) -> Response:
    await _flairbit(request)
    body = await parse_body(request, UserDeleted, max_bytes=4096)
    report = await state(request).erasure.erase(normalise_email(body.email))
    return json_response(report)


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
# Every public route of session-svc refuses a deleted user's older tokens.
DELETED = {
    401: "Missing or invalid token; or USER_DELETED: the token's user was deleted after it"
    " was issued (a token issued later works)"
}
KEY_ID = Param(
    "keyId",
    "path",
    {"type": "string", "pattern": KEY_ID_PATTERN},
    "the device's key id, chosen by the client",
)
_KEY_EXAMPLE = {
    "email": "alice@example.com",
    "keyId": "phone-1",
    "algorithm": "X25519",
    "publicKey": "fZwkMWU5glwYluV_KBl3Rnk85gy-461H2p0HuF-lXio",
    "fingerprint": "7574 198e fee4 9ade 61b4 69e9 43d8 ce94"
    " 2364 6e9d 4456 3955 2dd2 5ce8 88a9 58cd",
    "version": 7,
    "createdAt": "2026-01-02T10:00:00Z",
    "updatedAt": "2026-01-02T10:00:00Z",
}

OPERATIONS: tuple[tuple[Operation, Endpoint], ...] = (
    (
        Operation(
            "POST",
            "/api/chat/init",
            "Open (or find) the caller's session with another user for an intent",
            body=InitSessionRequest,
            answer=SessionView,
            errors=(400, 401, 404, 413, 422, 429, 503, 504),
            reasons=DELETED,
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
            reasons=DELETED,
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
            "PUT",
            "/api/chat/keys/{keyId}",
            "Publish the caller's public key for one device, or replace it: 201 when the key id"
            " is new (or was revoked), 200 when it replaced the key or the same key was already"
            " current (idempotent). The caller's peers and other devices get a `keys` event on"
            " /user/queue/keys (added or replaced; none for the same key). 409"
            " KEY_LIMIT_REACHED past MAX_KEYS_PER_USER current keys; 422 KEY_ID_INVALID,"
            " ALGORITHM_UNSUPPORTED, PUBLIC_KEY_INVALID; 429 KEY_CHANGES_RATE_LIMITED past"
            " KEY_CHANGE_BURST changes (a request that changes nothing is not counted)",
            body=PublishKeyRequest,
            answer=PublicKeyView,
            also=(201,),
            params=(KEY_ID,),
            errors=(400, 401, 409, 413, 422, 429, 503),
            reasons=DELETED,
            tags=("keys",),
            body_example={
                "algorithm": "X25519",
                "publicKey": "fZwkMWU5glwYluV_KBl3Rnk85gy-461H2p0HuF-lXio",
            },
            answer_example=_KEY_EXAMPLE,
        ),
        put_key,
    ),
    (
        Operation(
            "DELETE",
            "/api/chat/keys/{keyId}",
            "Revoke one of the caller's keys (a lost or retired device): the caller's peers"
            " and other devices get a `keys` event (revoked). Revoking a revoked key changes"
            " nothing (204 again); 404 KEY_NOT_FOUND for an id the caller never published",
            status=204,
            params=(KEY_ID,),
            errors=(401, 404, 422, 429, 503),
            reasons=DELETED,
            tags=("keys",),
        ),
        delete_key,
    ),
    (
        Operation(
            "GET",
            "/api/chat/keys",
            "The caller's current public keys (revoked ones are not listed), oldest first",
            answer=UserKeys,
            errors=(401, 429, 503),
            reasons=DELETED,
            tags=("keys",),
            answer_example={"email": "alice@example.com", "keys": [_KEY_EXAMPLE]},
        ),
        own_keys,
    ),
    (
        Operation(
            "GET",
            "/api/chat/{sessionId}/keys",
            "Both participants' current public keys, to encrypt for every device of both"
            " (participants only: 403 NOT_PARTICIPANT; 404 SESSION_NOT_FOUND)",
            answer=SessionKeys,
            params=(SESSION_ID,),
            errors=(401, 403, 404, 429, 503),
            reasons=DELETED,
            tags=("keys",),
        ),
        session_keys,
    ),
    (
        Operation(
            "POST",
            "/api/chat/{sessionId}/block",
            "Block the other participant in this session (idempotent): from the commit on,"
            " neither side sends, edits or deletes in it (403 SESSION_BLOCKED), subscribes to"
            " its topic or types in it, and the two stop being each other's presence peers"
            " through it. Both participants get a `block` event (on /user/queue/messages, and"
            " on their subscriptions to the session's topic, which then end). Participants"
            " only: 403 NOT_PARTICIPANT; 404 SESSION_NOT_FOUND",
            answer=BlockState,
            params=(SESSION_ID,),
            errors=(401, 403, 404, 429, 503),
            reasons=DELETED,
            tags=("sessions",),
            answer_example={
                "sessionId": "3f1c9a4e-6a52-4f0e-9d43-0b3a1f0c5d21",
                "blocked": True,
                "blockedBy": ["alice@example.com"],
            },
        ),
        block,
    ),
    (
        Operation(
            "DELETE",
            "/api/chat/{sessionId}/block",
            "Lift the caller's own block of this session (idempotent: 200 with the state when"
            " the caller blocks nothing); the session opens again once no participant blocks"
            " it, and both participants get an `unblock` event. 403 NOT_BLOCKER when only the"
            " other participant blocks it (only the one who blocked unblocks); 403"
            " NOT_PARTICIPANT; 404 SESSION_NOT_FOUND",
            answer=BlockState,
            params=(SESSION_ID,),
            errors=(401, 403, 404, 429, 503),
            reasons=DELETED,
            tags=("sessions",),
            answer_example={
                "sessionId": "3f1c9a4e-6a52-4f0e-9d43-0b3a1f0c5d21",
                "blocked": False,
                "blockedBy": [],
            },
        ),
        unblock,
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
            "/internal/flairbit/user-deleted",
            "FlairBit: a user was deleted; erase what chat holds of them. In one transaction"
            " their messages become tombstones (text, envelopes, edit history and sender gone;"
            " each keeps its place in the session's order, sent by a random placeholder, never"
            " derived from the email), every session they were in is closed for good (state"
            " CLOSED, closedReason PARTICIPANT_DELETED; the peer gets a `closed` event and"
            " later sends are refused with 403 SESSION_CLOSED), their public keys and the"
            " unpublished or dead outbox rows naming them are removed; then their live"
            " connections close (ERROR USER_DELETED) and Redis forgets them (presence, last"
            " seen, seats, rate limits). Idempotent: a repeated call, or one for a user chat"
            " never knew, answers 200 with zero counts. 503 when Redis could not be cleaned:"
            " call again",
            body=UserDeleted,
            answer=ErasureReport,
            errors=(400, 401, 413, 422, 503),
            security="flairbitJwt",
            tags=("flairbit",),
            body_example={"email": "alice@example.com"},
            answer_example={
                "sessionsClosed": 2,
                "messagesErased": 14,
                "changesErased": 1,
                "keysRemoved": 1,
                "outboxRowsPurged": 0,
                "cacheEntriesRemoved": 3,
            },
        ),
        user_deleted,
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
