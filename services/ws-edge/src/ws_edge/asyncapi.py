"""The STOMP API as an AsyncAPI 3.0 document, built from what the edge decides with, so that
the document cannot drift from the code:

- a channel per destination of :mod:`ws_edge.destinations`, SUBSCRIBE and SEND alike;
- a message per event kind of :data:`ws_edge.fanout.KINDS`: its MESSAGE headers named as
  :func:`ws_edge.fanout.encode` writes them, its payload the msgspec Struct its publisher
  encodes (``msgspec.json.schema_components``); a user queue carries the kind
  :data:`ws_edge.hub.USER_QUEUES` gives it, a session's topic every kind published to the
  session's key;
- a message per SEND destination, its payload the Struct :data:`ws_edge.commands.SEND_BODIES`
  decodes it as, and the SUBSCRIBE headers the edge reads (``x-resume-after-seq``);
- the errors: the codes of :class:`ws_edge.codes.EdgeCode` on ``/user/queue/error``, the
  RECEIPT and ERROR frames, and the close codes of :class:`ws_edge.disconnect.Disconnect`.

The document describes the server (the edge, behind the gateway's ``/ws``): a ``send``
operation is a MESSAGE frame it sends to a subscription, a ``receive`` operation a SEND frame
it takes. The prose of each destination and kind is in the tables below; a destination or
kind they do not describe, or describe but the edge does not serve, stops the build
(:class:`Undocumented`).

``python -m ws_edge.asyncapi PATH`` writes the document; ``make asyncapi`` writes the copy the
gateway serves (``services/gateway/src/gateway/asyncapi.json``), which a test keeps byte for
byte equal to a fresh build.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from chat_common.dto import (
    BlockEvent,
    ErrorEvent,
    MessageChange,
    MessageView,
    ReceiptEvent,
    SessionClosedEvent,
)
from chat_common.keys import KeyChangeEvent
from chat_common.presence import PresenceView

from . import destinations
from .codes import MEANINGS, EdgeCode, EdgeError
from .commands import DELETE, EDIT, READ, SEND, SEND_BODIES, TYPING, TypingEvent
from .disconnect import Disconnect
from .fanout import (
    CONTENT_TYPE,
    ERROR_KIND,
    EVENT_HEADER,
    KINDS,
    RECEIPT_ID_HEADER,
    SEQ_HEADER,
    SESSION_HEADER,
)
from .hub import QUEUE_KINDS, USER_QUEUES
from .resume import MAX_SEQ, RESUME_HEADER
from .server import SUBPROTOCOLS, WS_PATH

VERSION: Final = "3.0.0"
API_VERSION: Final = "1.0.0"
SCHEMA_REF: Final = "#/components/schemas/{name}"


class Undocumented(LookupError):
    """A destination, kind or channel parameter the tables here do not describe (or describe,
    but the edge does not serve)."""


Carried = Literal["always", "sometimes", "never"]
Ref = Callable[[Any], dict[str, Any]]
"""The ``$ref`` to a msgspec type's schema in ``components.schemas``."""


@dataclass(frozen=True, slots=True)
class _Kind:
    summary: str
    payload: Sequence[Any]
    """The msgspec types of the body (several: any of them); empty: a JSON object."""
    session: Carried
    """Whether the MESSAGE carries ``x-session-id``."""
    seq: bool
    """Whether it carries ``x-seq`` (and ``message-id: {sessionId}:{seq}``)."""
    topic: bool
    """Published to the session's key, so every subscription of the session's topic gets it."""


_KINDS: Final[Mapping[str, _Kind]] = {
    "message": _Kind(
        "A chat message, stored: both participants get it, on the session's topic and on "
        "their /user/queue/messages, once per seq and in seq order on a topic subscription. "
        "An end-to-end encrypted message has `content` empty and its `encrypted` envelope as "
        "the sender sent it (the server never reads it)",
        (MessageView,),
        "always",
        seq=True,
        topic=True,
    ),
    "edit": _Kind(
        "The sender edited a message (PATCH /api/chat/{sessionId}/messages/{messageId}): an "
        "event with its own seq (x-seq), after the message's, in the same gapless order as "
        "messages, replayed on resume; `messageId` names the message, `content` is its new "
        "text (or, for an encrypted message, `encrypted` its new envelope), `changedAt` its "
        "editedAt. Both participants get it, on the session's topic and "
        "on their /user/queue/messages. Not a new message: it never counts as unread",
        (MessageChange,),
        "always",
        seq=True,
        topic=True,
    ),
    "delete": _Kind(
        "The sender deleted a message for everyone (DELETE "
        "/api/chat/{sessionId}/messages/{messageId}): an event with its own seq, as an edit; "
        "`messageId` names the message, now a tombstone (its text or envelope erased, its seq "
        "kept), "
        "`content` is empty. Delivered and replayed as an edit",
        (MessageChange,),
        "always",
        seq=True,
        topic=True,
    ),
    "block": _Kind(
        "A participant blocked the session (POST /api/chat/{sessionId}/block): from now on "
        "nothing is sent, edited or deleted in it (SESSION_BLOCKED), nobody subscribes to its "
        "topic or types in it, and presence stops flowing between the two. Both participants "
        "get it on /user/queue/messages, and every subscription of the session's topic gets "
        "it as its last frame: the edge then delivers nothing more on that subscription "
        "(STOMP has no server-side UNSUBSCRIBE; the client UNSUBSCRIBEs it, which frees its "
        "id, and may SUBSCRIBE again once an `unblock` event says `blocked` is false). "
        "`blockedBy` lists who blocks (each lifts only their own block)",
        (BlockEvent,),
        "always",
        seq=False,
        topic=True,
    ),
    "unblock": _Kind(
        "A participant lifted their block (DELETE /api/chat/{sessionId}/block): when "
        "`blocked` is false the session is open again (sends, subscriptions, typing; presence "
        "flows again between the two); while the other participant still blocks it, it stays "
        "blocked. Both participants get it on /user/queue/messages",
        (BlockEvent,),
        "always",
        seq=False,
        topic=True,
    ),
    "closed": _Kind(
        "The session is closed for good: the other participant's account was deleted "
        "(FlairBit's POST /internal/flairbit/user-deleted), `reason` PARTICIPANT_DELETED. "
        "Their messages are tombstones now, sent by a placeholder (`Deleted user`); nothing "
        "more is sent, edited or deleted in the session (SESSION_CLOSED), subscribed to or "
        "typed in; its history stays readable. The remaining participant gets it on "
        "/user/queue/messages and as the last frame of each subscription to the session's "
        "topic, which then ends (the edge delivers nothing more on it)",
        (SessionClosedEvent,),
        "always",
        seq=False,
        topic=True,
    ),
    "receipt": _Kind(
        "A participant moved their read or delivered mark (kind `read` or `delivered`)",
        (ReceiptEvent,),
        "always",
        seq=False,
        topic=True,
    ),
    "typing": _Kind(
        "A participant is typing (or stopped): never stored; the sender's own connections get "
        "it too",
        (TypingEvent,),
        "always",
        seq=False,
        topic=True,
    ),
    "presence": _Kind(
        "A user who shares a session with the subscriber went online (their first connection "
        "on any edge) or offline (their last one closed and stayed closed for the grace, "
        "PRESENCE_GRACE_SECONDS, 3 s: a reconnect within it is no change; or their edge died "
        "and its leases lapsed: within PRESENCE_LEASE_SECONDS, 30 s, plus a sweep). Only to "
        "the user's peers, on /user/queue/presence; GET /api/chat/presence answers the state "
        "for a peer who just connected",
        (PresenceView,),
        "never",
        seq=False,
        topic=False,
    ),
    "ack": _Kind(
        "The stored message, for a /app/chat.send of the user, before the SEND's RECEIPT: to "
        "the sending connection (or, when the SEND went through the send queue, to each of "
        "the user's connections subscribed to /user/queue/ack); the stored change "
        "(MessageChange, x-seq its own seq) for a /app/chat.edit or /app/chat.delete, to the "
        "sending connection",
        (MessageView, MessageChange),
        "always",
        seq=True,
        topic=False,
    ),
    "keys": _Kind(
        "A user who shares a session with the subscriber, or the subscriber on another "
        "device, added, replaced or revoked a public key (PUT and DELETE "
        "/api/chat/keys/{keyId}): warn before encrypting to a key that changed. At least once "
        "and in no guaranteed order: keep the highest `version` per (email, keyId); GET "
        "/api/chat/{sessionId}/keys answers the current keys",
        (KeyChangeEvent,),
        "never",
        seq=False,
        topic=False,
    ),
    ERROR_KIND: _Kind(
        "A refusal of what this connection sent: the edge's own (EdgeError) or message-svc's "
        "(ErrorEvent, when the SEND went through the send queue)",
        (EdgeError, ErrorEvent),
        "sometimes",
        seq=False,
        topic=False,
    ),
}

_SUBSCRIBE_PROSE: Final[Mapping[str, str]] = {
    destinations.SESSION_TOPIC: "The session's events. Participants only: session-svc is asked "
    "(with the user's token) and the answer cached; anyone else gets an ERROR and the close, "
    "and so does a participant while the session is blocked (the ERROR's message names "
    "SESSION_BLOCKED), or once the session is closed (SESSION_CLOSED); a `block` or "
    "`closed` event is a subscription's last frame. "
    f"With `{RESUME_HEADER}: N` every stored event with seq > N (messages in their current "
    "state, edits and deletes with the x-event they had live) is replayed, in order, "
    "before the live ones, with no gap and no duplicate at the seam; a seq gap in the live "
    "events is filled from the stored events the same way.",
    "/user/queue/messages": "Every chat message of the connected user's sessions, and every "
    "edit and delete of one (x-event `edit`, `delete`), across sessions and devices; and each "
    "block and unblock of one of the user's sessions (x-event `block`, `unblock`), and the "
    "close of one whose other participant's account was deleted (x-event `closed`).",
    "/user/queue/ack": "The stored message, for each /app/chat.send of this connection (of any "
    "of the user's connections, for a SEND stored through the send queue), and the stored "
    "change, for each /app/chat.edit and /app/chat.delete of this connection.",
    "/user/queue/presence": "Presence changes (online, offline with last seen) of the users "
    "who share a session with the connected user, across sessions; never of strangers. "
    "Events, not state: read the current state with GET /api/chat/presence after subscribing.",
    "/user/queue/keys": "Public-key changes (added, replaced, revoked) of the users who share "
    "a session with the connected user, and of the user's own devices; never of strangers. "
    "Events, not state: read the keys with GET /api/chat/{sessionId}/keys after subscribing.",
    "/user/queue/error": "Refusals of what this connection sent (of what any of the user's "
    "connections sent, for a SEND refused through the send queue). A SEND that asked for a "
    "receipt and is refused gets its `receipt-id` here and never a RECEIPT; on a connection "
    "with no subscription here it gets an ERROR frame (same body) instead, then the close.",
}

_SEND_PROSE: Final[Mapping[str, tuple[str, str]]] = {
    SEND: (
        "Send a chat message",
        "As POST /api/chat/message does (same rules, same idempotency by clientMessageId): "
        "`content`, or an end-to-end encrypted `encrypted` envelope, exactly one "
        "(CONTENT_OR_ENCRYPTED); an envelope is checked for shape and size only "
        "(ENVELOPE_INVALID, ENCRYPTED_TOO_LARGE, RECIPIENT_NOT_PARTICIPANT). "
        "SENDs are pipelined: a connection may have many in flight, stored and answered in "
        "the order sent. Stored: the message on /user/queue/ack, then the RECEIPT (committed "
        "to PostgreSQL). Refused: /user/queue/error, never a RECEIPT (SESSION_BLOCKED in a "
        "session either participant blocks, SESSION_CLOSED in a session closed because the "
        "other participant's account was deleted).",
    ),
    TYPING: (
        "Say the user is typing, or stopped",
        "`typing` defaults to true; participants only, and not in a blocked session "
        "(SESSION_BLOCKED on /user/queue/error) or a closed one (SESSION_CLOSED). Published "
        "to the session's topic, never stored; the RECEIPT follows the publish.",
    ),
    EDIT: (
        "Edit one of the user's messages",
        "As PATCH /api/chat/{sessionId}/messages/{messageId} does: the sender only, within the "
        "edit window (EDIT_WINDOW_SECONDS), not a deleted message, content as for a send (an "
        "encrypted message takes a new `encrypted` envelope, never text: ENCRYPTION_MISMATCH); "
        "idempotent by clientMessageId. Stored: the change on /user/queue/ack, then the "
        "RECEIPT (committed); both participants get an `edit` event. Refused: message-svc's "
        "code (NOT_MESSAGE_SENDER, MESSAGE_NOT_FOUND, EDIT_WINDOW_CLOSED, MESSAGE_DELETED, "
        "CLIENT_MESSAGE_ID_REUSED, SESSION_BLOCKED, SESSION_CLOSED, CONTENT_BLANK, ...) on "
        "/user/queue/error, never a RECEIPT.",
    ),
    DELETE: (
        "Delete one of the user's messages for everyone",
        "As DELETE /api/chat/{sessionId}/messages/{messageId} does: the sender only, at any "
        "time; the text is erased and a tombstone keeps the message's seq; idempotent by "
        "clientMessageId. Answered as an edit; both participants get a `delete` event.",
    ),
    READ: (
        "Move the user's read mark",
        "Up to `upToSeq`, as POST /api/chat/{sessionId}/read does; the peer gets a `receipt` "
        "event. The RECEIPT follows message-svc's answer; a refusal is on /user/queue/error.",
    ),
}

_PARAMETERS: Final[Mapping[str, str]] = {
    destinations.SESSION_ID.strip("{}"): "The session's id: a lower-case, hyphenated UUID "
    "(one spelling per topic; any other is an unknown destination)."
}

_INFO = (
    "The chat backend's WebSocket API: STOMP 1.2 (1.1 and 1.0 too) over a WebSocket at "
    f"`{WS_PATH}`, as any unmodified STOMP client speaks it. This document describes the "
    "server: a `send` operation is a MESSAGE frame the server sends to a SUBSCRIBE of its "
    "channel's destination, a `receive` operation a SEND frame it takes at its channel's "
    "destination. Every MESSAGE has a JSON body and names its event in the `x-event` header. "
    "Any other destination is refused with an ERROR frame, then the close. Generated from "
    "ws-edge's code (ws_edge.asyncapi); the REST API is at /openapi.json."
)


def build() -> dict[str, Any]:
    """The AsyncAPI document of the STOMP API; raise :class:`Undocumented` when the tables here
    and the edge's own disagree."""
    _same(set(_KINDS), KINDS, "event kind")
    _same(set(_SUBSCRIBE_PROSE), set(destinations.SUBSCRIBE), "SUBSCRIBE destination")
    _same(set(_SEND_PROSE), set(destinations.SEND), "SEND destination")
    _same(set(SEND_BODIES), set(destinations.SEND), "SEND body")
    schemas, ref = _schemas()
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for kind, spec in _KINDS.items():
        messages[_event_message(kind)] = _event(kind, spec, ref)
    for destination in destinations.SUBSCRIBE:
        carried = _kinds_on(destination)
        channel = _channel_id(destination)
        channels[channel] = _channel(
            destination, _SUBSCRIBE_PROSE[destination], [_event_message(k) for k in carried]
        )
        operations["send" + _upper_first(channel)] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"MESSAGE frames to a SUBSCRIBE of {destination}",
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/{_event_message(k)}"} for k in carried
            ],
            "x-subscribe-headers": _subscribe_headers(destination),
        }
    messages["receiptFrame"] = _receipt_frame()
    messages["errorFrame"] = _error_frame(ref)
    channels["connection"] = {
        "address": None,
        "title": "The connection itself",
        "description": "Frames the server sends to the connection, not to a destination: "
        "RECEIPT (what a frame's `receipt` header asked for) and ERROR (then the close).",
        "messages": {
            name: {"$ref": f"#/components/messages/{name}"}
            for name in ("receiptFrame", "errorFrame")
        },
    }
    for destination in destinations.SEND:
        channel = _channel_id(destination)
        name = _send_message(destination)
        messages[name] = _send(destination, ref(SEND_BODIES[destination]))
        channels[channel] = _channel(destination, " ".join(_SEND_PROSE[destination]), [name])
        operations["receive" + _upper_first(channel)] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"SEND frames to {destination}",
            "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"}],
            "reply": {
                "channel": {"$ref": "#/channels/connection"},
                "messages": [{"$ref": "#/channels/connection/messages/receiptFrame"}],
            },
        }
    operations["sendReceipt"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/connection"},
        "summary": "RECEIPT frames",
        "messages": [{"$ref": "#/channels/connection/messages/receiptFrame"}],
    }
    operations["sendError"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/connection"},
        "summary": "ERROR frames, each followed by the close",
        "messages": [{"$ref": "#/channels/connection/messages/errorFrame"}],
    }
    return {
        "asyncapi": VERSION,
        "info": {
            "title": "Chat backend STOMP API",
            "version": API_VERSION,
            "description": _INFO,
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {"gateway": _server(), "gatewaySockJS": _sockjs_server()},
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": _security_schemes(),
        },
    }


def render(document: Mapping[str, Any]) -> bytes:
    """The document as the gateway serves it: indented JSON, one trailing newline."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


# -- pieces -----------------------------------------------------------------------------------


def _same(described: set[str], served: Iterable[str], what: str) -> None:
    served = set(served)
    if described != served:
        raise Undocumented(
            f"{what}s the AsyncAPI document does not describe: {sorted(served - described)}; "
            f"described but not served: {sorted(described - served)} (ws_edge/asyncapi.py)"
        )


def _schemas() -> tuple[dict[str, Any], Ref]:
    types: list[Any] = [
        *(t for spec in _KINDS.values() for t in spec.payload),
        *SEND_BODIES.values(),
    ]
    types = list(dict.fromkeys(types))
    refs, components = msgspec.json.schema_components(types, ref_template=SCHEMA_REF)
    ref_of = dict(zip(types, refs, strict=True))

    def ref(t: Any) -> dict[str, Any]:
        return dict(ref_of[t])

    return dict(sorted(components.items())), ref


def _kinds_on(destination: str) -> list[str]:
    """The event kinds a subscription of ``destination`` gets, in the table's order."""
    if destination in USER_QUEUES:
        return list(QUEUE_KINDS[destination])
    return [kind for kind, spec in _KINDS.items() if spec.topic]


def _channel(destination: str, prose: str, message_names: Sequence[str]) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": destination,
        "description": prose,
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in message_names},
    }
    names = re.findall(r"\{(\w+)\}", destination)
    if names:
        unknown = [n for n in names if n not in _PARAMETERS]
        if unknown:
            raise Undocumented(f"channel parameters without a description: {unknown}")
        channel["parameters"] = {n: {"description": _PARAMETERS[n]} for n in names}
    return channel


def _channel_id(destination: str) -> str:
    """``/topic/session.{sessionId}`` -> ``topicSession``; ``/app/chat.send`` ->
    ``appChatSend`` (parameters left out)."""
    words = re.split(r"[^A-Za-z0-9]+", re.sub(r"\{\w+\}", "", destination))
    words = [w for w in words if w]
    return words[0] + "".join(_upper_first(w) for w in words[1:])


def _upper_first(word: str) -> str:
    return word[:1].upper() + word[1:]


def _event_message(kind: str) -> str:
    return f"{kind}Event"


def _send_message(destination: str) -> str:
    return _channel_id(destination) + "Frame"


def _string(description: str, **more: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **more}


def _object(properties: Mapping[str, Any], required: Iterable[str]) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "required": list(required)}


def _event(kind: str, spec: _Kind, ref: Ref) -> dict[str, Any]:
    """A MESSAGE frame of one event kind: its headers and JSON body."""
    headers: dict[str, Any] = {
        "destination": _string("the destination of the subscription"),
        "subscription": _string("the `id` of the SUBSCRIBE"),
        "message-id": _string(
            "`{sessionId}:{seq}` for an event with a seq (`message`, `edit`, `delete`: the same "
            "on every edge and every replay; de-duplicate on it, or on the body's messageId for "
            "a message); an opaque id otherwise"
        ),
        "ack": _string("in the `client` and `client-individual` ack modes: what to ACK or NACK"),
        "content-type": {"const": CONTENT_TYPE},
        EVENT_HEADER: {"const": kind, "description": "the event's kind"},
    }
    required = ["destination", "subscription", "message-id", "content-type", EVENT_HEADER]
    if spec.session != "never":
        headers[SESSION_HEADER] = _string("the session the event is about", format="uuid")
        if spec.session == "always":
            required.append(SESSION_HEADER)
    if spec.seq:
        headers[SEQ_HEADER] = _string(
            "the event's seq in its session (gapless, from 1; a message's, or an edit's or "
            "delete's own), in decimal",
            pattern="^[0-9]+$",
        )
        required.append(SEQ_HEADER)
    if kind == ERROR_KIND:
        headers[RECEIPT_ID_HEADER] = _string(
            "the `receipt` of the refused SEND, when it asked for one (no RECEIPT follows)"
        )
    payload: dict[str, Any]
    if not spec.payload:
        payload = {"type": "object", "description": "no fixed shape yet"}
    elif len(spec.payload) == 1:
        payload = ref(spec.payload[0])
    else:
        payload = {"anyOf": [ref(t) for t in spec.payload]}
    message: dict[str, Any] = {
        "name": kind,
        "title": f"{kind} event",
        "summary": spec.summary,
        "contentType": CONTENT_TYPE,
        "headers": _object(headers, required),
        "payload": payload,
    }
    if kind == ERROR_KIND:
        message["description"] = _codes_table()
    return message


def _codes_table() -> str:
    rows = "".join(f"| `{code.value}` | {MEANINGS[code]} |\n" for code in EdgeCode)
    return (
        "`code` is one of the edge's own codes below, or, for a chat message message-svc "
        "refused, message-svc's code: the `code` of the problem POST /api/chat/message "
        "answers (see /openapi.json), such as `NOT_PARTICIPANT` or `CONTENT_TOO_LARGE`.\n\n"
        "| code | meaning |\n|---|---|\n" + rows
    )


def _send(destination: str, body_ref: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": _send_message(destination),
        "title": f"SEND {destination}",
        "summary": _SEND_PROSE[destination][0],
        "description": _SEND_PROSE[destination][1],
        "contentType": CONTENT_TYPE,
        "headers": _object(
            {
                "destination": _destination(destination),
                "content-type": _string(f"`{CONTENT_TYPE}` (the body is read as JSON anyway)"),
                "receipt": _string(
                    "ask for a RECEIPT once done; a refusal carries it as `receipt-id` instead"
                ),
            },
            ["destination"],
        ),
        "payload": body_ref,
    }


def _destination(destination: str) -> dict[str, Any]:
    """The ``destination`` header a client writes for a channel's address."""
    if "{" not in destination:
        return {"const": destination}
    return _string(f"`{destination}`, its parameters filled in")


def _subscribe_headers(destination: str) -> dict[str, Any]:
    """The headers of a SUBSCRIBE the edge reads (STOMP has no place for them in AsyncAPI)."""
    headers: dict[str, Any] = {
        "id": _string("the subscription's id, echoed in each MESSAGE's `subscription`"),
        "destination": _destination(destination),
        "ack": {
            "enum": ["auto", "client", "client-individual"],
            "default": "auto",
            "description": "ACKed chat messages move the user's delivered mark",
        },
        "receipt": _string("ask for a RECEIPT once the subscription is authorised and bound"),
    }
    if destination == destinations.SESSION_TOPIC:
        headers[RESUME_HEADER] = _string(
            "replay every stored message with a greater seq first (ASCII digits, at most "
            f"{MAX_SEQ}); anything else is an ERROR, then the close",
            pattern="^[0-9]+$",
        )
    return _object(headers, ["id", "destination"])


def _receipt_frame() -> dict[str, Any]:
    return {
        "name": "RECEIPT",
        "title": "RECEIPT frame",
        "summary": "What a frame's `receipt` header asked for, once done",
        "description": "After a SEND to /app/chat.send: the message is committed to "
        "PostgreSQL (after its /user/queue/ack MESSAGE). After a SUBSCRIBE: the subscription "
        "is authorised and its routing key bound. A refused frame never gets one.",
        "headers": _object({"receipt-id": _string("the frame's `receipt`")}, ["receipt-id"]),
    }


def _error_frame(ref: Ref) -> dict[str, Any]:
    closes = "".join(
        f"| `{reason.value}` | {reason.code} | {reason.reason or '(none)'} |\n"
        for reason in Disconnect
    )
    return {
        "name": "ERROR",
        "title": "ERROR frame",
        "summary": "The server refuses a frame or ends the connection; the close follows",
        "description": "The `message` header says why (a bad or expired token, an unknown "
        "destination, a subscription refused, a limit passed, a missed heart-beat, a "
        "restart...). When FlairBit deletes the user's account, every connection of theirs "
        "gets an ERROR whose `message` is `USER_DELETED: the account was deleted`, then the "
        "close 1008 (`user_deleted` below): do not reconnect. A CONNECT with a token issued "
        "before the account was deleted (still unexpired) gets the same ERROR, then the close "
        "1008 (`unauthenticated`): a token issued after it works. "
        "A refused SEND that asked for a receipt, on a connection with no "
        "/user/queue/error subscription, gets an ERROR with its `receipt-id` and the error's "
        "JSON body. The close codes of the server's disconnects (an ERROR comes first when "
        "the client can still read one):\n\n"
        "| reason | close code | close reason |\n|---|---|---|\n" + closes,
        "headers": _object(
            {
                "message": _string("why, on one line"),
                RECEIPT_ID_HEADER: _string("the `receipt` of the refused frame, if it had one"),
                "content-type": {
                    "enum": [CONTENT_TYPE, "text/plain"],
                    "description": "present with a body: JSON for a refused SEND, text otherwise",
                },
            },
            ["message"],
        ),
        "payload": {
            "anyOf": [
                ref(EdgeError),
                ref(ErrorEvent),
                {"type": "string", "description": "a plain-text detail, or nothing"},
            ]
        },
    }


def _server() -> dict[str, Any]:
    protocols = ", ".join(f"`{p}`" for p in SUBPROTOCOLS)
    return {
        "host": "{host}",
        "pathname": WS_PATH,
        "protocol": "ws",
        "title": "The gateway",
        "description": f"STOMP over a WebSocket: subprotocols {protocols} (a client that "
        "offers none says its version in CONNECT). Heart-beats are negotiated; a peer silent "
        "for twice the interval is dropped. Frame, header and body sizes are capped, and a "
        "client too slow to read its MESSAGEs is disconnected.",
        "variables": {
            "host": {
                "default": "127.0.0.1:8080",
                "description": "the gateway's host and port (or the Ingress's)",
            }
        },
        "security": [
            {"$ref": "#/components/securitySchemes/userJwt"},
            {"$ref": "#/components/securitySchemes/accessToken"},
        ],
    }


def _sockjs_server() -> dict[str, Any]:
    return {
        "host": "{host}",
        "pathname": WS_PATH,
        "protocol": "http",
        "title": "The gateway, over SockJS",
        "description": "The same STOMP API for browsers whose WebSockets are blocked: the SockJS "
        'protocol of sockjs-client 1.6 under this prefix (`new SockJS("https://{host}/ws")`), '
        "transports `websocket`, `xhr-streaming`, `xhr-polling` and `eventsource`. Each SockJS "
        "message is one STOMP frame. The token goes in CONNECT, or as `access_token` in the "
        "SockJS URL. Frames wait for the next stream or poll in a capped queue (a client too "
        "slow to take them is disconnected), a streaming response ends after 128 KiB (the "
        "client opens the next), and a session no request received for 5 s is over.",
        "variables": {
            "host": {
                "default": "127.0.0.1:8080",
                "description": "the gateway's host and port (or the Ingress's)",
            }
        },
        "security": [
            {"$ref": "#/components/securitySchemes/userJwt"},
            {"$ref": "#/components/securitySchemes/accessToken"},
        ],
    }


def _security_schemes() -> dict[str, Any]:
    return {
        "userJwt": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "The user's JWT: the handshake's `Authorization: Bearer` header, "
            "else the CONNECT frame's `Authorization: Bearer` header, else its `passcode`. "
            "A missing, bad or expired token is an ERROR, then the close; so is the token's "
            "expiry on an open connection.",
        },
        "accessToken": {
            "type": "httpApiKey",
            "name": "access_token",
            "in": "query",
            "description": "For browsers, which cannot set the handshake's headers: the same "
            "JWT as a query parameter (never logged).",
        },
    }


def main(argv: Sequence[str] = ()) -> int:
    """Write the document to the path given (standard output without one)."""
    data = render(build())
    if argv:
        Path(argv[0]).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
