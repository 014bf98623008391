"""What the edge says when it refuses something a client sent (pure): the codes of its own
refusals, and the JSON body that carries one on ``/user/queue/error`` (or in an ERROR frame
when the connection has no such subscription).

A refusal by message-svc keeps message-svc's code (its problem document's ``code``, as the
REST API answers it): the edge passes it on as :data:`Forwarded`. Every other code is a member
of :class:`EdgeCode`, so a code made up at a call site does not type-check, and the AsyncAPI
document (:mod:`ws_edge.asyncapi`) lists every code the edge can send with its meaning.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, NewType

import msgspec


class EdgeCode(enum.StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    RATE_LIMITED = "RATE_LIMITED"
    UNAVAILABLE = "UNAVAILABLE"
    NOT_PARTICIPANT = "NOT_PARTICIPANT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    SESSION_BLOCKED = "SESSION_BLOCKED"
    SESSION_CLOSED = "SESSION_CLOSED"


MEANINGS: Final[Mapping[EdgeCode, str]] = {
    EdgeCode.INVALID_INPUT: "the SEND's body is not the destination's JSON body (or message-svc "
    "refused a read mark as invalid)",
    EdgeCode.RATE_LIMITED: "too many SENDs on this connection (SENDS_BURST, SENDS_PER_SECOND), "
    "too many waiting for their answer (MAX_WAITING_SENDS), or a read mark refused with 429",
    EdgeCode.UNAVAILABLE: "a dependency (RabbitMQ, session-svc, message-svc) did not take it: "
    "send it again",
    EdgeCode.NOT_PARTICIPANT: "the user is not a participant of the session",
    EdgeCode.UNAUTHENTICATED: "message-svc refused the connection's token for a read mark",
    EdgeCode.SESSION_NOT_FOUND: "a read mark for a session that does not exist",
    EdgeCode.SESSION_BLOCKED: "a typing indicator in a session that a participant blocks "
    "(sends, edits and deletes are refused by message-svc with the same code)",
    EdgeCode.SESSION_CLOSED: "a typing indicator in a session closed for good (the other "
    "participant's account was deleted; sends, edits and deletes are refused by message-svc "
    "with the same code)",
}

Forwarded = NewType("Forwarded", str)
"""A code another service decided (message-svc's refusal of a SEND), passed on unchanged."""


class EdgeError(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True):
    """The JSON of an error the edge sends about what a client sent: ``clientMessageId`` as
    the SEND's body had it (any string; absent when it had none), ``sessionId`` when known."""

    code: str
    detail: str
    client_message_id: str | None = None
    session_id: str | None = None
