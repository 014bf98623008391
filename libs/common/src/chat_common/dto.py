"""Wire DTOs of the public API (camelCase JSON), validated by msgspec."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Final

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
    blocked_by: tuple[str, ...] = ()
    """The participants (emails) who block the session: empty while it is open."""
    state: str = "OPEN"
    """``OPEN``, or ``CLOSED`` for good (a participant's account was deleted): nothing is sent,
    changed, subscribed to or typed in a closed session; its history stays readable."""
    closed_reason: str | None = None
    """Why a ``CLOSED`` session closed: ``PARTICIPANT_DELETED``."""


class Membership(Response, frozen=True):
    session_id: uuid.UUID
    intent: str
    me: Participant
    peer: Participant
    blocked_by: tuple[str, ...] = ()
    """The participants who block the session: while any does, no sends, changes,
    subscriptions or typing in it."""
    state: str = "OPEN"
    """``OPEN``, or ``CLOSED`` for good (a participant's account was deleted): nothing is sent,
    changed, subscribed to or typed in a closed session; its history stays readable."""
    closed_reason: str | None = None
    """Why a ``CLOSED`` session closed: ``PARTICIPANT_DELETED``."""


class BlockState(Response, frozen=True):
    """A session's block state (the answer of ``POST`` / ``DELETE /api/chat/{id}/block``)."""

    session_id: uuid.UUID
    blocked: bool
    """Whether either participant blocks the session."""
    blocked_by: tuple[str, ...]
    """The participants (emails) who block it; each lifts only their own block."""


class BlockEvent(Response, frozen=True):
    """The body of a ``block`` / ``unblock`` event, sent to both participants: the session's
    state after the change, and who changed it."""

    session_id: uuid.UUID
    change: str
    """``block`` or ``unblock``."""
    blocked: bool
    blocked_by: tuple[str, ...]
    changed_by: str
    changed_at: dt.datetime


OPEN: Final = "OPEN"
CLOSED: Final = "CLOSED"
PARTICIPANT_DELETED: Final = "PARTICIPANT_DELETED"
"""The reason of a session closed because FlairBit deleted one of its participants."""
USER_DELETED: Final = "USER_DELETED"
"""The code of the ERROR frame that closes a deleted user's live connections."""


class SessionClosedEvent(Response, frozen=True):
    """The body of a ``closed`` event, sent to the remaining participant (and on the
    session's topic, whose subscriptions then end): the session is closed for good."""

    session_id: uuid.UUID
    state: str
    """``CLOSED``."""
    reason: str
    """``PARTICIPANT_DELETED``: the other participant's account was deleted."""
    closed_at: dt.datetime


class UserDeletedEvent(Response, frozen=True):
    """The body of a ``user-deleted`` event, to the deleted user's own connections: every edge
    that holds one closes it with an ERROR frame (``message``: ``USER_DELETED``)."""

    code: str
    detail: str


ContentText = Annotated[str, msgspec.Meta(max_length=65536)]

# -- the encrypted envelope (end-to-end encryption; docs/decisions.md, "Encrypted messages") --

B64URL_PATTERN = r"^[A-Za-z0-9_-]*$"
ENVELOPE_KEY_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # the key registry's keyId
ENVELOPE_MAX_RECIPIENTS = 20  # every current key of both participants (2 x MAX_KEYS_PER_USER)
ENVELOPE_MAX_CHARS = 256 * 1024  # a bound of the schema; ENCRYPTED_MAX_BYTES is the limit


def _b64url(max_length: int, description: str, min_length: int = 0) -> msgspec.Meta:
    return msgspec.Meta(
        min_length=min_length,
        max_length=max_length,
        pattern=B64URL_PATTERN,
        description=f"{description}, in base64url without padding (RFC 4648 §5)",
    )


EnvelopeKeyId = Annotated[
    str,
    msgspec.Meta(
        pattern=ENVELOPE_KEY_ID_PATTERN,
        description="A keyId of the public-key registry (PUT /api/chat/keys/{keyId})",
    ),
]
EnvelopeAlgorithm = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$",
        description="The scheme the clients agreed on, e.g. X25519-HKDF-SHA256+A256GCM; the "
        "server does not interpret it",
    ),
]
WrappedKeyText = Annotated[str, _b64url(1024, "The content key wrapped for this device")]
NonceText = Annotated[str, _b64url(256, "The nonce or IV of the content encryption")]
CiphertextText = Annotated[
    str, _b64url(ENVELOPE_MAX_CHARS, "The encrypted message (with its tag)", min_length=1)
]


class EnvelopeRecipient(Request, frozen=True, omit_defaults=True):
    """One device the message is encrypted for: a participant's key (``email``, ``keyId``)
    and, where the scheme needs one, the content key wrapped for that device."""

    email: Email
    key_id: EnvelopeKeyId
    wrapped_key: WrappedKeyText | None = None


class Envelope(Request, frozen=True, omit_defaults=True):
    """An end-to-end encrypted message as the server stores and delivers it, unchanged and
    unread: the server checks its shape and size, never what it says."""

    alg: EnvelopeAlgorithm
    sender_key_id: EnvelopeKeyId
    recipients: Annotated[
        list[EnvelopeRecipient], msgspec.Meta(min_length=1, max_length=ENVELOPE_MAX_RECIPIENTS)
    ]
    ciphertext: CiphertextText
    nonce: NonceText | None = None


class SendMessageRequest(Request, frozen=True, omit_defaults=True):
    """A message: its text in ``content`` or, end-to-end encrypted, its ``encrypted``
    envelope; exactly one of the two (422 ``CONTENT_OR_ENCRYPTED`` otherwise)."""

    session_id: uuid.UUID
    client_message_id: uuid.UUID
    content: ContentText | None = None
    encrypted: Envelope | None = None


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
    """A message in its current state: ``content`` is the latest text (``editedAt`` is the
    time of the latest edit); a deleted message is a tombstone (``deleted``, ``deletedAt``,
    ``content`` empty, no ``encrypted``) that keeps its ``seq``. An encrypted message has
    ``content`` empty and its latest ``encrypted`` envelope, as its sender sent it."""

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
    edited_at: dt.datetime | None = None
    deleted: bool = False
    deleted_at: dt.datetime | None = None
    encrypted: Envelope | None = None


class EditMessageRequest(Request, frozen=True, omit_defaults=True):
    """``PATCH /api/chat/{sessionId}/messages/{messageId}``: the message's new text, or a new
    ``encrypted`` envelope for an encrypted message (exactly one of the two; an edit keeps the
    message plain or encrypted). The same ``clientMessageId`` from the same user answers the
    same edit again and changes nothing."""

    client_message_id: uuid.UUID
    content: ContentText | None = None
    encrypted: Envelope | None = None


class DeleteMessageRequest(Request, frozen=True):
    """``DELETE /api/chat/{sessionId}/messages/{messageId}``: idempotent per
    ``clientMessageId`` as an edit."""

    client_message_id: uuid.UUID


CHANGE_KINDS = ("edit", "delete")


class MessageChange(Response, frozen=True):
    """An edit or a delete of a message: an event with its own ``seq`` in the session (the
    ``x-event: edit`` or ``delete`` MESSAGE's body, and the answer to the REST call).
    ``messageId`` and ``messageSeq`` name the message changed; ``content`` is an edit's new
    text (empty for a delete, for an edit of a message deleted since, and for an edit of an
    encrypted message, whose new envelope is ``encrypted``); ``changedAt`` is the message's
    ``editedAt`` or ``deletedAt``; ``clientMessageId`` is the change's own."""

    change: str  # "edit" | "delete"
    session_id: uuid.UUID
    seq: int
    message_id: uuid.UUID
    message_seq: int
    sender_id: uuid.UUID
    sender_email: str
    content: str
    client_message_id: uuid.UUID
    changed_at: dt.datetime
    encrypted: Envelope | None = None


class SessionEvent(Response, frozen=True, omit_defaults=True):
    """One place in a session's order: ``event`` ``message`` with the ``message`` in its
    current state, or ``edit``/``delete`` with the ``change``."""

    event: str  # "message" | "edit" | "delete"
    seq: int
    message: MessageView | None = None
    change: MessageChange | None = None


class EventsPage(Response, frozen=True):
    """A page of a session's events, oldest first (``GET /api/chat/{sessionId}/events``)."""

    session_id: uuid.UUID
    events: list[SessionEvent]


class HistoryPage(Response, frozen=True):
    session_id: uuid.UUID
    messages: list[MessageView]


class UnreadView(Response, frozen=True):
    session_id: uuid.UUID
    count: int
    messages: list[MessageView]


class LastMessage(Response, frozen=True):
    """The session's latest message in its current state (``content`` empty when deleted).
    An encrypted message is only marked ``encrypted`` (``content`` empty): its envelope is in
    the history."""

    message_id: uuid.UUID
    seq: int
    sender_email: str
    content: str
    sent_at: dt.datetime
    edited_at: dt.datetime | None = None
    deleted: bool = False
    encrypted: bool = False


class SessionSummary(Response, frozen=True):
    session_id: uuid.UUID
    intent: str
    peer: Participant
    me: Participant
    last_message: LastMessage | None
    unread_count: int
    created_at: dt.datetime
    blocked_by: tuple[str, ...] = ()
    """The participants (emails) who block the session: empty while it is open."""
    state: str = "OPEN"
    """``OPEN``, or ``CLOSED`` for good (a participant's account was deleted): nothing is sent,
    changed, subscribed to or typed in a closed session; its history stays readable."""
    closed_reason: str | None = None
    """Why a ``CLOSED`` session closed: ``PARTICIPANT_DELETED``."""


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
    content: str | None
    client_message_id: uuid.UUID
    receipt: str | None = None
    connection: str | None = None
    token: str | None = None
    encrypted: Envelope | None = None


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


class UserDeleted(Request, frozen=True):
    """FlairBit tells chat that it deleted a user: their data in chat is erased."""

    email: Email


class ErasureReport(Response, frozen=True):
    """What an erasure did (all zero for an unknown user, or for one erased before)."""

    sessions_closed: int
    """Sessions of the user that were closed for their peer."""
    messages_erased: int
    """The user's messages made tombstones (text, envelope and sender gone)."""
    changes_erased: int
    """The user's edits and deletes whose text, envelope and sender were erased."""
    keys_removed: int
    """The user's public keys (revoked ones included) removed."""
    outbox_rows_purged: int
    """Unpublished or dead outbox rows carrying the user's data, removed."""
    cache_entries_removed: int
    """Redis entries of the user (presence, last seen, seats, rate limits) removed."""


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
