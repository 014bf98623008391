"""Wire DTOs of the public API (camelCase JSON), validated by msgspec."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

from .problems import Problem

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254)]
Intent = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")]


class Request(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    """Base of request bodies: unknown fields are refused."""


class Response(msgspec.Struct, rename="camel", frozen=True):
    """Base of response bodies."""


class InitSessionRequest(Request, frozen=True):
    to_email: Email
    intent: Intent
    from_email: Email | None = None


class Participant(Response, frozen=True):
    profile_id: uuid.UUID
    display_name: str
    email: str


class SessionView(Response, frozen=True):
    session_id: uuid.UUID
    intent: str
    participants: tuple[Participant, Participant]
    created_at: dt.datetime


class Membership(Response, frozen=True):
    session_id: uuid.UUID
    intent: str
    me: Participant
    peer: Participant


ContentText = Annotated[str, msgspec.Meta(max_length=65536)]


class SendMessageRequest(Request, frozen=True):
    session_id: uuid.UUID
    content: ContentText
    client_message_id: uuid.UUID


BULK_MAX = 100


class BulkSendRequest(Request, frozen=True):
    """Up to 100 messages from one sender, each sent as by ``POST /api/chat/message``."""

    messages: Annotated[list[SendMessageRequest], msgspec.Meta(min_length=1, max_length=BULK_MAX)]


GROUPS_MAX = 100  # senders in one grouped send
GROUPED_MAX = 1_000  # messages in one grouped send, all senders together


class SendGroup(Request, frozen=True):
    """One sender's part of a grouped send (``POST /internal/sends``): the sender's own
    token, which authenticates these messages and no others, and up to 100 messages, each a
    JSON document checked on its own (as a bulk send's items: one bad item is that item's
    problem)."""

    token: Annotated[str, msgspec.Meta(min_length=1, max_length=16 * 1024)]
    messages: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=BULK_MAX)]
    request_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None  # for the logs
    trace: dict[str, str] | None = None  # W3C trace context of the send (traceparent, ...)


class GroupedSendRequest(Request, frozen=True):
    """Messages of several senders stored in one request: how ws-edge forwards the STOMP
    SENDs of many connections at once. Each group is answered as a bulk send of its own."""

    groups: Annotated[list[SendGroup], msgspec.Meta(min_length=1, max_length=GROUPS_MAX)]


class MarkRequest(Request, frozen=True):
    up_to_seq: Annotated[int, msgspec.Meta(ge=0, le=2**62)]


class MessageView(Response, frozen=True):
    message_id: uuid.UUID
    session_id: uuid.UUID
    seq: int
    sender_id: uuid.UUID
    sender_display_name: str
    sender_email: str
    content: str
    client_message_id: uuid.UUID
    sent_at: dt.datetime
    delivered: bool = False
    seen: bool = False


class HistoryPage(Response, frozen=True):
    session_id: uuid.UUID
    messages: list[MessageView]


class UnreadView(Response, frozen=True):
    session_id: uuid.UUID
    count: int
    messages: list[MessageView]


class LastMessage(Response, frozen=True):
    message_id: uuid.UUID
    seq: int
    sender_email: str
    content: str
    sent_at: dt.datetime


class SessionSummary(Response, frozen=True):
    session_id: uuid.UUID
    intent: str
    peer: Participant
    me: Participant
    last_message: LastMessage | None
    unread_count: int
    created_at: dt.datetime


class SessionList(Response, frozen=True, omit_defaults=True):
    """A page of the caller's sessions, most recently active first; ``nextBefore``, when there
    may be more, is the ``before`` cursor of the next page (also in the ``Link`` header)."""

    sessions: list[SessionSummary]
    next_before: str | None = None


class Marks(Response, frozen=True):
    session_id: uuid.UUID
    read_seq: int
    delivered_seq: int


class ReceiptEvent(Response, frozen=True):
    """Sent to both participants when one of them moves a read or delivered mark."""

    session_id: uuid.UUID
    kind: str  # "read" | "delivered"
    profile_id: uuid.UUID
    email: str
    up_to_seq: int


class SendCommand(Response, frozen=True):
    """A SEND on ``/app/chat.send`` as the edge puts it on the ``chat.send`` queue. ``token``
    is the sender's own bearer token: message-svc stores the message only if it names
    ``user`` (so whoever may publish to the queue cannot send as anyone else)."""

    user: str
    session_id: uuid.UUID
    content: str
    client_message_id: uuid.UUID
    receipt: str | None = None
    connection: str | None = None
    token: str | None = None


class ErrorEvent(Response, frozen=True):
    """What ``/user/queue/error`` carries."""

    code: str
    detail: str
    client_message_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None


class ProfileChanged(Request, frozen=True):
    """FlairBit tells chat that a user's profile changed (display name, removal)."""

    email: Email
    intent: Intent | None = None


class MatchSession(Request, frozen=True):
    """FlairBit asks chat to open the session of two matched users."""

    first_email: Email
    second_email: Email
    intent: Intent


class BulkItemResult(Response, frozen=True, omit_defaults=True):
    """One message of a bulk send, at its index in the request: ``status`` 200 with the stored
    ``message`` (``replayed`` when it was stored before), or the problem that refused it."""

    index: int
    status: int
    message: MessageView | None = None
    replayed: bool | None = None
    problem: Problem | None = None
    retry_after: int | None = None  # seconds, with a 429 or 503 problem


class BulkSendResult(Response, frozen=True):
    results: list[BulkItemResult]


class GroupResult(Response, frozen=True, omit_defaults=True):
    """One group of a grouped send: ``status`` 200 with a result per message (as a bulk
    send's), or the problem that refused the whole group (its token, its shape)."""

    status: int
    results: list[BulkItemResult] = msgspec.field(default_factory=list)
    problem: Problem | None = None
    retry_after: int | None = None


class GroupedSendResult(Response, frozen=True):
    groups: list[GroupResult]


class SentItem(msgspec.Struct, rename="camel"):
    """A :class:`BulkItemResult` as a caller of a grouped send reads it: the message and the
    problem as raw JSON, passed on or decoded as the caller needs (empty when absent)."""

    status: int
    index: int = 0
    message: msgspec.Raw = msgspec.Raw()
    replayed: bool | None = None
    problem: msgspec.Raw = msgspec.Raw()
    retry_after: int | None = None


class SentGroup(msgspec.Struct, rename="camel"):
    """A :class:`GroupResult` as a caller reads it."""

    status: int
    results: list[SentItem] = msgspec.field(default_factory=list)
    problem: msgspec.Raw = msgspec.Raw()
    retry_after: int | None = None


class GroupedSendAnswer(msgspec.Struct):
    """A :class:`GroupedSendResult` as a caller reads it."""

    groups: list[SentGroup]
