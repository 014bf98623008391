"""SEND frames to ``/app/*``: what a client asks the chat to do.

- ``/app/chat.send`` ``{sessionId, content | encrypted, clientMessageId}`` (an encrypted
  message's envelope is passed on as sent; message-svc checks it): with ``SEND_ROUTE=direct``
  (the default) the SEND joins the connection's pipe to message-svc (:mod:`ws_edge.sends`):
  the read loop goes on at once, the SENDs of a connection are stored in order, in one request
  per batch, with the user's own token. Stored: the message on the connection's
  ``/user/queue/ack`` subscriptions, then the RECEIPT. Refused: ``/user/queue/error`` (with
  ``receipt-id``; no RECEIPT, and an ERROR with ``receipt-id`` when the connection has no
  ``/user/queue/error`` subscription). Unanswered (message-svc unreachable or failing): the
  SEND goes to the send queue as below, so an accepted SEND is stored once message-svc is
  back. With ``SEND_ROUTE=queue`` every SEND takes that path: a ``SendCommand`` (the verified
  user, the SEND's receipt, this connection's id) published, persistent and confirmed, to the
  send queue; message-svc commits, then publishes an ``ack`` event (the RECEIPT and
  ``/user/queue/ack``) or an ``error`` event.
- ``/app/chat.typing`` ``{sessionId, typing}``: participants only; published straight to the
  session's key, never stored.
- ``/app/chat.read`` ``{sessionId, upToSeq}``: message-svc moves the read mark (the peer gets
  a read receipt); the RECEIPT follows message-svc's answer.
- ``/app/chat.edit`` ``{sessionId, messageId, content | encrypted, clientMessageId}`` and
  ``/app/chat.delete`` ``{sessionId, messageId, clientMessageId}``: as ``PATCH`` and ``DELETE
  /api/chat/{sessionId}/messages/{messageId}`` (message-svc, with the user's own token; the
  same rules and idempotency by ``clientMessageId``). Stored: the change on the connection's
  ``/user/queue/ack`` subscriptions, then the RECEIPT (committed); both participants get the
  ``edit``/``delete`` event like a message. Refused: message-svc's code on
  ``/user/queue/error``. Unanswered (message-svc unreachable or failing): ``UNAVAILABLE`` on
  ``/user/queue/error``; a change is never queued: the client sends it again, with the same
  ``clientMessageId``.

Every SEND takes a token from the connection's bucket. A body that does not parse, a refusal or
an unavailable dependency is a MESSAGE on the sender's ``/user/queue/error`` (``code``,
``detail``, ``clientMessageId`` when known); a SEND that asked for a receipt on a connection
with no such subscription gets an ERROR with ``receipt-id`` instead, then the close. An unknown
destination is an ERROR (with ``receipt-id`` when asked).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Protocol, TypeVar

import msgspec
from chat_stomp.events import SendReceived

from chat_common import routing, tracing
from chat_common.dto import (
    CLOSED,
    ContentText,
    Envelope,
    Membership,
    SendCommand,
    SendMessageRequest,
)
from chat_common.errors import ChatError
from chat_common.ratelimit import Decision

from .answers import Refused, SendAnswer, Stored
from .codes import EdgeCode, Forwarded
from .metrics import SENDS
from .sends import PendingSend, SendPipe

log = logging.getLogger(__name__)

SEND, TYPING, READ = "/app/chat.send", "/app/chat.typing", "/app/chat.read"
EDIT, DELETE = "/app/chat.edit", "/app/chat.delete"


class Publisher(Protocol):
    """The broker, as commands use it (``ws_edge.broker.Broker``)."""

    async def publish_event(self, key: str, body: bytes, headers: dict[str, Any]) -> None: ...

    async def publish_send(self, body: bytes, headers: dict[str, Any]) -> None: ...


class MarkMover(Protocol):
    """message-svc's read and delivered marks, and edits and deletes of messages
    (``ws_edge.upstream.Upstream``)."""

    async def mark(self, token: str, session: uuid.UUID, kind: str, up_to: int) -> int: ...

    async def change(self, token: str, change: EditMessage | DeleteMessage) -> SendAnswer: ...


@dataclass(frozen=True, slots=True)
class Services:
    """What command handlers reach beyond their connection."""

    broker: Publisher
    upstream: MarkMover
    send_route: str


class Connection(Protocol):
    """What a command handler may use of the connection that sent the frame
    (``ws_edge.client.ClientSession``): the narrow context commands run in."""

    id: str
    email: str | None
    token: str | None

    @property
    def services(self) -> Services: ...

    def take_send_token(self) -> Decision: ...

    def refuse(self, message: str, receipt: str | None = None) -> None: ...

    def error_message(
        self,
        code: EdgeCode | Forwarded,
        detail: str,
        receipt: str | None = None,
        *,
        client_message_id: str | None = None,
        session_id: str | None = None,
    ) -> None: ...

    def receipt(self, receipt_id: str) -> None: ...

    def acked(self, receipt: str | None, stored: Stored) -> None: ...

    def sends(self) -> SendPipe: ...

    async def member(self, session: uuid.UUID) -> Membership | None: ...


class Typing(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    session_id: uuid.UUID
    typing: bool = True


class ReadMark(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    session_id: uuid.UUID
    up_to_seq: Annotated[int, msgspec.Meta(ge=0, le=2**62)]


class EditMessage(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    """``/app/chat.edit``: a new text for one of the user's messages, or a new ``encrypted``
    envelope for an encrypted one (exactly one of the two, as a REST edit)."""

    session_id: uuid.UUID
    message_id: uuid.UUID
    client_message_id: uuid.UUID
    content: ContentText | None = None
    encrypted: Envelope | None = None


class DeleteMessage(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    """``/app/chat.delete``: delete one of the user's messages for everyone."""

    session_id: uuid.UUID
    message_id: uuid.UUID
    client_message_id: uuid.UUID


class TypingEvent(msgspec.Struct, rename="camel", frozen=True):
    """What the session's subscribers get for a ``/app/chat.typing`` (``x-event: typing``)."""

    session_id: uuid.UUID
    email: str
    profile_id: uuid.UUID
    typing: bool


_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)
_Body = TypeVar("_Body")
_MARK_REFUSALS = {
    400: EdgeCode.INVALID_INPUT,
    401: EdgeCode.UNAUTHENTICATED,
    403: EdgeCode.NOT_PARTICIPANT,
    404: EdgeCode.SESSION_NOT_FOUND,
    422: EdgeCode.INVALID_INPUT,
    429: EdgeCode.RATE_LIMITED,
}


async def handle_send(client: Connection, event: SendReceived) -> None:
    handler = _HANDLERS.get(event.destination)
    if handler is None:
        client.refuse(f"unknown destination {event.destination}", event.receipt)
        return
    decision = client.take_send_token()
    if not decision.allowed:
        detail = f"too many SENDs; retry in {decision.retry_after:.1f} s"
        client.error_message(
            EdgeCode.RATE_LIMITED,
            detail,
            event.receipt,
            client_message_id=_client_id(event.body),
        )
        return
    await handler(client, event)


def _client_id(body: bytes) -> str | None:
    """``clientMessageId`` of a body, when it has a readable one (to label an error)."""
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    cid = value.get("clientMessageId") if isinstance(value, dict) else None
    return cid if isinstance(cid, str) else None


def _decoded(client: Connection, event: SendReceived, body_type: type[_Body]) -> _Body | None:
    """The SEND's body as ``body_type``; None (and INVALID_INPUT on the error queue) when it
    is not one."""
    try:
        return msgspec.json.decode(event.body, type=body_type)
    except _DECODE_ERRORS as exc:
        client.error_message(
            EdgeCode.INVALID_INPUT,
            str(exc),
            event.receipt,
            client_message_id=_client_id(event.body),
        )
        return None


async def _send(client: Connection, event: SendReceived) -> None:
    request = _decoded(client, event, SendMessageRequest)
    if request is None:
        return
    pending = PendingSend(request, event.receipt, tracing.current())
    if client.services.send_route == "queue":
        await _enqueue(client, pending)
    elif not client.sends().submit(pending):
        SENDS.labels("too_many").inc()
        client.error_message(
            EdgeCode.RATE_LIMITED,
            "too many SENDs waiting for their answer; wait for their receipts",
            event.receipt,
            **_labels(request),
        )


async def answer_send(client: Connection, pending: PendingSend, answer: SendAnswer) -> None:
    """message-svc's answer to a SEND (:mod:`ws_edge.sends`): stored is the RECEIPT and
    ``/user/queue/ack``, refused is ``/user/queue/error``; unanswered (message-svc unreachable
    or failing) puts the SEND on the send queue, whose consumer stores it once message-svc can
    (a retry of the same ``clientMessageId`` if the first attempt was stored after all), and
    answers it from there."""
    if isinstance(answer, Stored):
        SENDS.labels("stored").inc()
        client.acked(pending.receipt, answer)
    elif isinstance(answer, Refused):
        SENDS.labels("refused").inc()
        client.error_message(
            Forwarded(answer.code), answer.detail, pending.receipt, **_labels(pending.request)
        )
    else:
        SENDS.labels("queued").inc()
        log.info("message-svc did not answer a SEND (%s); it goes to the send queue", answer.detail)
        await _enqueue(client, pending)


async def _enqueue(client: Connection, pending: PendingSend) -> None:
    """The SEND as a ``SendCommand`` on the send queue (persistent, confirmed); message-svc's
    consumer answers it with an ``ack`` or ``error`` event."""
    assert client.email is not None
    request = pending.request
    command = SendCommand(
        user=client.email,
        session_id=request.session_id,
        content=request.content,
        client_message_id=request.client_message_id,
        receipt=pending.receipt,
        connection=client.id,
        token=client.token,
        encrypted=request.encrypted,
    )
    headers: dict[str, Any] = {"x-user": client.email}
    tracing.inject(headers, pending.trace)
    try:
        await client.services.broker.publish_send(msgspec.json.encode(command), headers)
    except Exception as exc:
        log.warning("chat.send publish failed: %s", exc)
        SENDS.labels("failed").inc()
        client.error_message(
            EdgeCode.UNAVAILABLE,
            "the message was not accepted; send it again",
            pending.receipt,
            **_labels(request),
        )


def _labels(request: SendMessageRequest) -> dict[str, str]:
    """What labels an error about a SEND that parsed (``EdgeError``'s fields)."""
    return {
        "client_message_id": str(request.client_message_id),
        "session_id": str(request.session_id),
    }


async def _typing(client: Connection, event: SendReceived) -> None:
    try:
        typing = msgspec.json.decode(event.body, type=Typing)
    except _DECODE_ERRORS as exc:
        client.error_message(EdgeCode.INVALID_INPUT, str(exc), event.receipt)
        return
    try:
        member = await client.member(typing.session_id)
    except ChatError as exc:
        client.error_message(EdgeCode.UNAVAILABLE, exc.detail, event.receipt)
        return
    if member is None:
        detail = "not a participant of this session"
        client.error_message(EdgeCode.NOT_PARTICIPANT, detail, event.receipt)
        return
    if member.state == CLOSED:
        detail = "this session is closed (its other participant was deleted): no typing in it"
        client.error_message(EdgeCode.SESSION_CLOSED, detail, event.receipt)
        return
    if member.blocked_by:
        detail = "this session is blocked: no typing indicators in it"
        client.error_message(EdgeCode.SESSION_BLOCKED, detail, event.receipt)
        return
    assert client.email is not None
    body = msgspec.json.encode(
        TypingEvent(typing.session_id, client.email, member.me.profile_id, typing.typing)
    )
    headers: dict[str, Any] = {
        routing.EVENT_HEADER: "typing",
        routing.SESSION_HEADER: str(typing.session_id),
    }
    try:
        await client.services.broker.publish_event(
            routing.session_key(typing.session_id), body, headers
        )
    except Exception as exc:
        log.warning("typing publish failed: %s", exc)
        client.error_message(EdgeCode.UNAVAILABLE, "typing indicator not sent", event.receipt)
        return
    if event.receipt:
        client.receipt(event.receipt)


async def _read(client: Connection, event: SendReceived) -> None:
    try:
        mark = msgspec.json.decode(event.body, type=ReadMark)
    except _DECODE_ERRORS as exc:
        client.error_message(EdgeCode.INVALID_INPUT, str(exc), event.receipt)
        return
    assert client.token is not None
    try:
        status = await client.services.upstream.mark(
            client.token, mark.session_id, "read", mark.up_to_seq
        )
    except ChatError as exc:
        client.error_message(EdgeCode.UNAVAILABLE, exc.detail, event.receipt)
        return
    if status == 200:
        if event.receipt:
            client.receipt(event.receipt)
        return
    code = _MARK_REFUSALS.get(status, EdgeCode.UNAVAILABLE)
    client.error_message(
        code,
        f"the read mark was refused ({status})",
        event.receipt,
        session_id=str(mark.session_id),
    )


async def _edit(client: Connection, event: SendReceived) -> None:
    await _change(client, event, EditMessage)


async def _delete(client: Connection, event: SendReceived) -> None:
    await _change(client, event, DeleteMessage)


async def _change(
    client: Connection, event: SendReceived, kind: type[EditMessage] | type[DeleteMessage]
) -> None:
    """An edit or a delete, answered as a SEND to ``/app/chat.send`` is (without the queue)."""
    change = _decoded(client, event, kind)
    if change is None:
        return
    assert client.token is not None
    labels = {
        "client_message_id": str(change.client_message_id),
        "session_id": str(change.session_id),
    }
    answer = await client.services.upstream.change(client.token, change)
    if isinstance(answer, Stored):
        client.acked(event.receipt, answer)
    elif isinstance(answer, Refused):
        client.error_message(Forwarded(answer.code), answer.detail, event.receipt, **labels)
    else:
        log.info("message-svc did not answer a change (%s)", answer.detail)
        client.error_message(
            EdgeCode.UNAVAILABLE,
            "the change was not made; send it again with the same clientMessageId",
            event.receipt,
            **labels,
        )


_HANDLERS = {SEND: _send, TYPING: _typing, READ: _read, EDIT: _edit, DELETE: _delete}
SEND_DESTINATIONS: Final[tuple[str, ...]] = tuple(_HANDLERS)
"""Every destination a SEND may name (``ws_edge.destinations`` lists them with SUBSCRIBE's)."""
SEND_BODIES: Final[Mapping[str, type[msgspec.Struct]]] = {
    SEND: SendMessageRequest,
    TYPING: Typing,
    READ: ReadMark,
    EDIT: EditMessage,
    DELETE: DeleteMessage,
}
"""The JSON body each SEND destination is decoded as (its schema in the AsyncAPI document)."""
