"""HTTP routes of message-svc: parse, call the service, answer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, cast
from urllib.parse import urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from chat_common import openapi, tracing
from chat_common.dto import (
    BULK_MAX,
    GROUPED_MAX,
    BulkItemResult,
    BulkSendRequest,
    BulkSendResult,
    DeleteMessageRequest,
    EditMessageRequest,
    EventsPage,
    GroupedSendRequest,
    GroupedSendResult,
    GroupResult,
    HistoryPage,
    MarkRequest,
    Marks,
    MessageChange,
    MessageView,
    SendGroup,
    SendMessageRequest,
    SessionList,
    UnreadView,
)
from chat_common.errors import ChatError, InvalidInput
from chat_common.observability import request_id_var
from chat_common.openapi import Endpoint, Operation, Param
from chat_common.problems import problem_of, retry_after
from chat_common.web import ascii_int, bearer_token, decode_json, json_response, parse_body

from .domain import read_session_cursor
from .service import MAX_PAGE, Changed, Sent
from .state import AppState

TRACER = tracing.tracer(__name__)


def state(request: Request) -> AppState:
    return cast(AppState, request.state.app)


async def _user(request: Request) -> str:
    return (await state(request).users.identify(bearer_token(request))).email


def _session_id(request: Request) -> uuid.UUID:
    """The path's session id: a malformed one is bad input (422), not an unknown session."""
    try:
        return uuid.UUID(request.path_params["sessionId"])
    except ValueError:
        raise InvalidInput("sessionId must be a UUID", field="sessionId") from None


def _message_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["messageId"])
    except ValueError:
        raise InvalidInput("messageId must be a UUID", field="messageId") from None


def _int_param(request: Request, name: str, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    value = ascii_int(raw, low, high)
    if value is None:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}", field=name)
    return value


async def send_message(request: Request) -> Response:
    user = await _user(request)
    body = await parse_body(request, SendMessageRequest, max_bytes=256 * 1024)
    sent = await state(request).messages.send(user, body)
    headers = {"Idempotent-Replayed": "true"} if sent.replayed else None
    return json_response(sent.message, headers=headers)


class _BulkEnvelope(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A bulk send as first read: each item is checked on its own, so that one bad item is
    that item's problem, not the request's."""

    messages: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=BULK_MAX)]


BULK_MAX_BYTES = 1024 * 1024


def _item(raw: msgspec.Raw) -> SendMessageRequest | ChatError:
    """One item of a bulk send, or its problem (``field`` names a field of the item)."""
    try:
        return decode_json(raw, SendMessageRequest)
    except InvalidInput as exc:
        return exc


def _bulk_results(
    items: list[SendMessageRequest | ChatError], outcomes: list[Sent | ChatError]
) -> list[BulkItemResult]:
    """A result per item, in order: ``outcomes`` answer the valid items, in their order."""
    answered = iter(outcomes)
    results = []
    for index, item in enumerate(items):
        outcome = item if isinstance(item, ChatError) else next(answered)
        if isinstance(outcome, ChatError):
            problem = problem_of(outcome)
            results.append(
                BulkItemResult(
                    index=index,
                    status=problem.status,
                    problem=problem,
                    retry_after=retry_after(outcome),
                )
            )
        else:
            results.append(
                BulkItemResult(
                    index=index, status=200, message=outcome.message, replayed=outcome.replayed
                )
            )
    return results


async def _send_items(request: Request, user: str, raw: list[msgspec.Raw]) -> list[BulkItemResult]:
    items = [_item(r) for r in raw]
    valid = [item for item in items if isinstance(item, SendMessageRequest)]
    return _bulk_results(items, await state(request).messages.send_many(user, valid))


async def send_messages(request: Request) -> Response:
    user = await _user(request)
    envelope = await parse_body(request, _BulkEnvelope, max_bytes=BULK_MAX_BYTES)
    results = await _send_items(request, user, envelope.messages)
    return json_response(BulkSendResult(results=results))


GROUPED_MAX_BYTES = 4 * 1024 * 1024


async def send_grouped(request: Request) -> Response:
    """``POST /internal/sends``: several senders' messages in one request, each group
    authenticated by its own sender's token and answered as that sender's bulk send would be.
    All groups are handed to the group commit together, so they share its commits. A group
    whose token fails is refused alone; the request as a whole fails only for its shape."""
    envelope = await parse_body(request, GroupedSendRequest, max_bytes=GROUPED_MAX_BYTES)
    if sum(len(g.messages) for g in envelope.groups) > GROUPED_MAX:
        raise InvalidInput(f"at most {GROUPED_MAX} messages in one request", field="groups")
    users = state(request).users

    async def one(group: SendGroup) -> GroupResult:
        # Each group runs in its own task (gather), so its request id and span are its own.
        if group.request_id:
            request_id_var.set(group.request_id)
        with tracing.continued(TRACER, "send group", group.trace):
            try:
                user = (await users.identify(group.token)).email
                results = await _send_items(request, user, group.messages)
                return GroupResult(status=200, results=results)
            except ChatError as exc:
                problem = problem_of(exc)
                return GroupResult(
                    status=problem.status, problem=problem, retry_after=retry_after(exc)
                )

    answers = await asyncio.gather(*(one(group) for group in envelope.groups))
    return json_response(GroupedSendResult(groups=list(answers)))


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


def _changed(changed: Changed) -> Response:
    headers = {"Idempotent-Replayed": "true"} if changed.replayed else None
    return json_response(changed.change, headers=headers)


async def edit_message(request: Request) -> Response:
    user = await _user(request)
    session_id, message_id = _session_id(request), _message_id(request)
    body = await parse_body(request, EditMessageRequest, max_bytes=256 * 1024)
    changed = await state(request).messages.change(
        user,
        session_id,
        message_id,
        body.client_message_id,
        body.content,
        body.encrypted,
        edit=True,
    )
    return _changed(changed)


async def delete_message(request: Request) -> Response:
    user = await _user(request)
    session_id, message_id = _session_id(request), _message_id(request)
    body = await parse_body(request, DeleteMessageRequest, max_bytes=1024)
    changed = await state(request).messages.change(
        user, session_id, message_id, body.client_message_id
    )
    return _changed(changed)


async def events(request: Request) -> Response:
    user = await _user(request)
    session_id = _session_id(request)
    limit = _int_param(request, "limit", 1, MAX_PAGE) or state(request).history_default_limit
    after = _int_param(request, "after", 0, 2**62) or 0
    before = _int_param(request, "before", 1, 2**62)
    page = await state(request).messages.events(
        user, session_id, after=after, before=before, limit=limit
    )
    headers = None
    if len(page.events) == limit:
        query: dict[str, int] = {"limit": limit, "after": page.events[-1].seq}
        if before is not None:
            query["before"] = before
        headers = {"Link": f'<{request.url.path}?{urlencode(query)}>; rel="next"'}
    return json_response(page, headers=headers)


async def unread(request: Request) -> Response:
    user = await _user(request)
    return json_response(await state(request).messages.unread(user, _session_id(request)))


async def sessions(request: Request) -> Response:
    user = await _user(request)
    limit = _int_param(request, "limit", 1, MAX_PAGE) or state(request).history_default_limit
    cursor = request.query_params.get("before")
    before = None if cursor is None else read_session_cursor(cursor)
    page = await state(request).messages.sessions(user, limit=limit, before=before)
    headers = None
    if page.next_before is not None:
        query = urlencode({"limit": limit, "before": page.next_before})
        headers = {"Link": f'<{request.url.path}?{query}>; rel="next"'}
    return json_response(page, headers=headers)


def _mark(kind: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        user = await _user(request)
        session_id = _session_id(request)
        body = await parse_body(request, MarkRequest, max_bytes=1024)
        marks = await state(request).messages.mark(user, session_id, kind, body.up_to_seq)
        return json_response(marks)

    return endpoint


SESSION_ID = Param("sessionId", "path", {"type": "string", "format": "uuid"})
MESSAGE_ID = Param("messageId", "path", {"type": "string", "format": "uuid"})
SEQ = {"type": "integer", "minimum": 0}
MARK_ERRORS = (400, 401, 403, 404, 422, 429)

OPERATIONS: tuple[tuple[Operation, Endpoint], ...] = (
    (
        Operation(
            "POST",
            "/api/chat/message",
            "Send a message (idempotent per sender and clientMessageId): its text in"
            " `content`, or end-to-end encrypted, an `encrypted` envelope stored and delivered"
            " unread; exactly one (422 CONTENT_OR_ENCRYPTED). 413 CONTENT_TOO_LARGE or"
            " ENCRYPTED_TOO_LARGE (ENCRYPTED_MAX_BYTES); 422 ENVELOPE_INVALID or"
            " RECIPIENT_NOT_PARTICIPANT",
            body=SendMessageRequest,
            answer=MessageView,
            errors=(400, 401, 403, 404, 409, 413, 422, 429),
            headers={"Idempotent-Replayed": "true when the message was stored before"},
            tags=("messages",),
        ),
        send_message,
    ),
    (
        Operation(
            "POST",
            "/api/chat/messages",
            "Send up to 100 messages at once; each is answered on its own, in request order",
            body=BulkSendRequest,
            answer=BulkSendResult,
            errors=(400, 401, 413, 422, 429),
            tags=("messages",),
            body_example={
                "messages": [
                    {
                        "sessionId": "0b6f3c52-5f4e-4a34-9a52-2f4f4b7c1a10",
                        "content": "hi Bob",
                        "clientMessageId": "7d1c7e0e-2c1b-4b6a-9d8e-0d6f1d2b3c4a",
                    },
                    {
                        "sessionId": "0b6f3c52-5f4e-4a34-9a52-2f4f4b7c1a10",
                        "content": "",
                        "clientMessageId": "e3a9b7c2-4f5d-4e6a-8b9c-1d2e3f4a5b6c",
                    },
                ]
            },
            answer_example={
                "results": [
                    {
                        "index": 0,
                        "status": 200,
                        "message": {
                            "messageId": "5c0e9a8b-7d6f-4e3a-9b2c-1a0f9e8d7c6b",
                            "sessionId": "0b6f3c52-5f4e-4a34-9a52-2f4f4b7c1a10",
                            "seq": 42,
                            "senderId": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
                            "senderDisplayName": "Alice",
                            "senderEmail": "alice@example.com",
                            "content": "hi Bob",
                            "clientMessageId": "7d1c7e0e-2c1b-4b6a-9d8e-0d6f1d2b3c4a",
                            "sentAt": "2026-12-04T21:00:00Z",
                            "delivered": False,
                            "seen": False,
                        },
                    },
                    {
                        "index": 1,
                        "status": 422,
                        "problem": {
                            "type": "https://chat.example/problems/content-blank",
                            "title": "Invalid input",
                            "status": 422,
                            "detail": "content must not be blank",
                            "code": "CONTENT_BLANK",
                            "field": "content",
                        },
                    },
                ]
            },
        ),
        send_messages,
    ),
    (
        Operation(
            "GET",
            "/api/chat/sessions",
            "A page of the caller's sessions with peer, last message and unread count, most"
            " recently active first; the next page is in Link and nextBefore",
            answer=SessionList,
            params=(
                Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
                Param("before", "query", {"type": "string"}),
            ),
            errors=(401, 422, 429),
            headers={"Link": 'the next page, rel="next"'},
            tags=("sessions",),
        ),
        sessions,
    ),
    (
        Operation(
            "GET",
            "/api/chat/{sessionId}/history",
            "A page of the session's messages, newest first; the next page is in Link",
            answer=HistoryPage,
            params=(
                SESSION_ID,
                Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
                Param("before", "query", {"type": "integer", "minimum": 1}),
                Param("after", "query", SEQ),
            ),
            errors=(401, 403, 404, 422, 429),
            headers={"Link": 'the next page, rel="next"'},
            tags=("messages",),
        ),
        history,
    ),
    (
        Operation(
            "GET",
            "/api/chat/{sessionId}/events",
            "A page of the session's events above after, oldest first: every seq is a message"
            " (in its current state) or an edit or delete of one; the next page is in Link",
            answer=EventsPage,
            params=(
                SESSION_ID,
                Param("after", "query", SEQ, "the last seq the caller has (default 0)"),
                Param("before", "query", {"type": "integer", "minimum": 1}),
                Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
            ),
            errors=(401, 403, 404, 422, 429),
            headers={"Link": 'the next page, rel="next"'},
            tags=("messages",),
        ),
        events,
    ),
    (
        Operation(
            "PATCH",
            "/api/chat/{sessionId}/messages/{messageId}",
            "Edit one of the caller's messages within the edit window (EDIT_WINDOW_SECONDS):"
            " the edit is an event with its own seq (x-event edit); idempotent per"
            " clientMessageId. New `content`, or a new `encrypted` envelope for an encrypted"
            " message (an edit keeps the message's kind: 409 ENCRYPTION_MISMATCH). 403"
            " NOT_MESSAGE_SENDER, 404 MESSAGE_NOT_FOUND, 409 EDIT_WINDOW_CLOSED,"
            " MESSAGE_DELETED or CLIENT_MESSAGE_ID_REUSED",
            body=EditMessageRequest,
            answer=MessageChange,
            params=(SESSION_ID, MESSAGE_ID),
            errors=(400, 401, 403, 404, 409, 413, 422, 429),
            headers={"Idempotent-Replayed": "true when the change was made before"},
            tags=("messages",),
            body_example={
                "content": "hi Bob, see you at 8",
                "clientMessageId": "2b0c4d6e-8f10-4a32-9c54-7e6f8a9b0c1d",
            },
        ),
        edit_message,
    ),
    (
        Operation(
            "DELETE",
            "/api/chat/{sessionId}/messages/{messageId}",
            "Delete one of the caller's messages for everyone: its content is erased, a"
            " tombstone keeps its seq, and the delete is an event with its own seq (x-event"
            " delete); idempotent per clientMessageId. 403 NOT_MESSAGE_SENDER, 404"
            " MESSAGE_NOT_FOUND, 409 MESSAGE_DELETED or CLIENT_MESSAGE_ID_REUSED",
            body=DeleteMessageRequest,
            answer=MessageChange,
            params=(SESSION_ID, MESSAGE_ID),
            errors=(400, 401, 403, 404, 409, 422, 429),
            headers={"Idempotent-Replayed": "true when the change was made before"},
            tags=("messages",),
            body_example={"clientMessageId": "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"},
        ),
        delete_message,
    ),
    (
        Operation(
            "GET",
            "/api/chat/{sessionId}/unread",
            "The caller's unread messages in the session, oldest first, and their count",
            answer=UnreadView,
            params=(SESSION_ID,),
            errors=(401, 403, 404, 422, 429),
            tags=("messages",),
        ),
        unread,
    ),
    (
        Operation(
            "POST",
            "/api/chat/{sessionId}/read",
            "Move the caller's read mark; the peer gets a read receipt",
            body=MarkRequest,
            answer=Marks,
            params=(SESSION_ID,),
            errors=MARK_ERRORS,
            tags=("receipts",),
        ),
        _mark("read"),
    ),
    (
        Operation(
            "POST",
            "/api/chat/{sessionId}/delivered",
            "Move the caller's delivered mark; the peer gets a delivery receipt",
            body=MarkRequest,
            answer=Marks,
            params=(SESSION_ID,),
            errors=MARK_ERRORS,
            tags=("receipts",),
        ),
        _mark("delivered"),
    ),
)


def routes() -> list[BaseRoute]:
    return [
        *openapi.routes(OPERATIONS),
        # Not behind the gateway (it routes /api/* and /internal/flairbit/* only): ws-edge's.
        Route("/internal/sends", send_grouped, methods=["POST"]),
        openapi.openapi_route("message-svc", "1", [op for op, _ in OPERATIONS]),
    ]
