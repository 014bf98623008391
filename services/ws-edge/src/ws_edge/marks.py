"""Delivered marks from client acknowledgements, coalesced (pure).

A MESSAGE for a chat message carries ``message-id: {sessionId}:{seq}``. When a client in
``client`` or ``client-individual`` ack mode acknowledges messages of a session topic or of
``/user/queue/messages``, the edge moves the user's delivered mark in that session up to the
highest acknowledged seq. It does not call message-svc per ACK: ACKs are noted here and the
caller takes, now and then, one mark per session, higher than any mark it took before.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from .hub import TOPIC_PREFIX

MESSAGES_QUEUE = "/user/queue/messages"


def message_id(session: uuid.UUID | str, seq: int) -> str:
    """The STOMP ``message-id`` of a chat message: the same on every edge and every replay."""
    return f"{session}:{seq}"


def parse_message_id(value: str) -> tuple[uuid.UUID, int] | None:
    """(session, seq) of a chat message's id; None for any other id."""
    session_text, sep, seq_text = value.rpartition(":")
    if not sep or not (seq_text.isascii() and seq_text.isdigit()):
        return None
    try:
        return uuid.UUID(session_text), int(seq_text)
    except ValueError:
        return None


def counts_as_delivery(destination: str) -> bool:
    """Whether acknowledging a message of ``destination`` means the user received it."""
    return destination == MESSAGES_QUEUE or destination.startswith(TOPIC_PREFIX)


class DeliveredMarks:
    """Pending delivered marks of one connection: session -> highest acknowledged seq."""

    __slots__ = ("_pending", "_taken")

    def __init__(self) -> None:
        self._pending: dict[uuid.UUID, int] = {}
        self._taken: dict[uuid.UUID, int] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def note(self, destination: str, message_ids: Iterable[str]) -> bool:
        """Record acknowledged messages; True when a mark is now waiting to be sent."""
        if not counts_as_delivery(destination):
            return bool(self._pending)
        for value in message_ids:
            parsed = parse_message_id(value)
            if parsed is None:
                continue
            session, seq = parsed
            if seq > max(self._pending.get(session, 0), self._taken.get(session, 0)):
                self._pending[session] = seq
        return bool(self._pending)

    def take(self) -> dict[uuid.UUID, int]:
        """The marks to send now (one per session), each above what was taken before."""
        marks, self._pending = self._pending, {}
        self._taken.update(marks)
        return marks
