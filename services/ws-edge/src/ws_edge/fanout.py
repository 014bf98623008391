"""One event from the broker, read and encoded once for every local subscriber (pure).

An AMQP message on ``chat.events`` becomes a :class:`BrokerEvent`: its kind (``x-event``),
session, seq, the keys that routed it here (the routing key and the ``CC`` list) and, for the
replies message-svc sends about a ``/app/chat.send``, the receipt and connection they answer.
:func:`encode` serializes the shared tail of the STOMP MESSAGE frame; the connections only add
their destination, message-id and subscription lines in front of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from chat_stomp.frames import EncodedMessage, Header, encode_message

from chat_common import routing

from .marks import message_id

CC_HEADER = "CC"
MESSAGE_KIND: Final = "message"
CHANGE_KINDS: Final = frozenset({"edit", "delete"})
"""An edit or a delete of a message: an event with its own seq, as a message is."""
BLOCK_KIND: Final = "block"
UNBLOCK_KIND: Final = "unblock"
BLOCK_KINDS: Final = frozenset({BLOCK_KIND, UNBLOCK_KIND})
"""A participant blocked or unblocked the session: no seq; a ``block`` ends the session's
topic subscriptions on the edge that delivers it."""
CLOSED_KIND: Final = "closed"
"""The session closed for good (a participant's account was deleted): no seq; like a
``block``, it ends the session's topic subscriptions on the edge that delivers it."""
USER_DELETED_KIND: Final = "user-deleted"
"""FlairBit deleted a user: every edge closes that user's connections (routed by the user's
key; delivered on no destination)."""
ENDING_KINDS: Final = frozenset({BLOCK_KIND, CLOSED_KIND})
"""Kinds that end the topic subscriptions they reach."""
SESSION_CHANGE_KINDS: Final = frozenset({*BLOCK_KINDS, CLOSED_KIND})
"""Kinds after which cached membership answers of their session are stale."""
KINDS = frozenset(
    {
        MESSAGE_KIND,
        *CHANGE_KINDS,
        *BLOCK_KINDS,
        CLOSED_KIND,
        "receipt",
        "typing",
        "presence",
        "ack",
        "error",
        "keys",
    }
)
"""The kinds delivered to subscriptions (each described by the AsyncAPI document)."""
ERROR_KIND: Final = "error"
CONTROL_KINDS: Final = frozenset({USER_DELETED_KIND})
"""Kinds the edge acts on and delivers to no subscription."""

# The headers of a MESSAGE's shared tail (the STOMP names are those of the AMQP headers).
CONTENT_TYPE: Final = "application/json"
EVENT_HEADER: Final = routing.EVENT_HEADER
SESSION_HEADER: Final = routing.SESSION_HEADER
SEQ_HEADER: Final = routing.SEQ_HEADER
RECEIPT_ID_HEADER: Final = "receipt-id"


class BadEvent(ValueError):
    """An AMQP message the edge cannot turn into a STOMP MESSAGE."""


@dataclass(frozen=True, slots=True)
class BrokerEvent:
    kind: str
    keys: tuple[str, ...]
    """The routing key, then the CC keys (duplicates removed)."""
    session: str | None
    seq: int | None
    receipt: str | None
    connection: str | None
    body: bytes

    @property
    def message_id(self) -> str | None:
        """The stable id of a chat message (``{session}:{seq}``); None for other events."""
        if self.session is None or self.seq is None:
            return None
        return message_id(self.session, self.seq)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def parse_event(routing_key: str, headers: Mapping[str, Any], body: bytes) -> BrokerEvent:
    """Read an AMQP message's routing key, headers and body; raise :class:`BadEvent`."""
    kind = _text(headers.get(routing.EVENT_HEADER)) or "message"
    if kind not in KINDS and kind not in CONTROL_KINDS:
        raise BadEvent(f"unknown x-event {kind!r}")
    raw_seq = headers.get(routing.SEQ_HEADER)
    seq: int | None = None
    if raw_seq is not None:
        try:
            seq = int(_text(raw_seq) or "")
        except ValueError:
            raise BadEvent(f"x-seq is not an integer: {raw_seq!r}") from None
    cc = headers.get(CC_HEADER) or ()
    if isinstance(cc, str | bytes):
        cc = (cc,)
    keys = [routing_key, *(k for k in (_text(c) for c in cc) if k)]
    return BrokerEvent(
        kind=kind,
        keys=tuple(dict.fromkeys(k for k in keys if k)),
        session=_text(headers.get(routing.SESSION_HEADER)),
        seq=seq,
        receipt=_text(headers.get(routing.RECEIPT_HEADER)),
        connection=_text(headers.get(routing.CONNECTION_HEADER)),
        body=body,
    )


def encode(
    kind: str,
    session: str | None,
    seq: int | None,
    body: bytes,
    receipt: str | None = None,
) -> EncodedMessage:
    """The shared tail of the MESSAGE: JSON body, ``x-event``, ``x-session-id``, ``x-seq``,
    and ``receipt-id`` on an error about a SEND that asked for a receipt."""
    headers: list[Header] = [("content-type", CONTENT_TYPE), (EVENT_HEADER, kind)]
    if session:
        headers.append((SESSION_HEADER, session))
    if seq is not None:
        headers.append((SEQ_HEADER, str(seq)))
    if receipt and kind == ERROR_KIND:
        headers.append((RECEIPT_ID_HEADER, receipt))
    return encode_message(headers, body)


def encode_event(event: BrokerEvent) -> EncodedMessage:
    return encode(event.kind, event.session, event.seq, event.body, event.receipt)


class _Stored(msgspec.Struct):
    change: str | None = None


_stored = msgspec.json.Decoder(_Stored)


def stored_kind(body: bytes) -> str:
    """The kind of a stored event read back from message-svc (a resume or a gap fill): a
    change's body names it (``change``: ``edit`` or ``delete``); anything else is a message."""
    try:
        change = _stored.decode(body).change
    except (msgspec.DecodeError, msgspec.ValidationError):
        return MESSAGE_KIND
    return change if change in CHANGE_KINDS else MESSAGE_KIND


class _Refusal(msgspec.Struct):
    detail: str = ""


_refusal = msgspec.json.Decoder(_Refusal)


def refusal_detail(body: bytes) -> str:
    """The ``detail`` of an ``error`` event's body (``{code, detail, ...}``), for the
    ``message`` header of an ERROR frame."""
    try:
        detail = _refusal.decode(body).detail
    except (msgspec.DecodeError, msgspec.ValidationError):
        detail = ""
    return detail or "the message was refused"
