"""What became of SENDs handed to message-svc, one answer per SEND."""

from __future__ import annotations

import msgspec


class Stored(msgspec.Struct, frozen=True):
    """A SEND message-svc stored (or had stored before: a replay): the message as JSON."""

    body: bytes
    session: str
    seq: int


class Refused(msgspec.Struct, frozen=True):
    """A SEND message-svc refused for good (invalid, not a participant, rate limited...)."""

    code: str
    detail: str


class Unanswered(msgspec.Struct, frozen=True):
    """message-svc could not be asked or could not answer (unreachable, 5xx): the SEND may
    or may not be stored."""

    detail: str


SendAnswer = Stored | Refused | Unanswered
