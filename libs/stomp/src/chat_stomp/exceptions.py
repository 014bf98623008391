"""The STOMP core's exceptions; the tree is drawn in the package docstring.

Peer errors (``ProtocolError`` and below) become an ERROR frame and a closed connection; local
errors (``UsageError`` and below) are bugs in the caller and are raised to it.
"""

from __future__ import annotations


class StompError(Exception):
    """Base of every error this package raises on purpose."""


class ProtocolError(StompError):
    """The peer broke the protocol; ``message`` is short and safe to send back to it.

    ``receipt`` is the ``receipt`` header of the offending frame when it is known, so that the
    ERROR frame can carry it back as ``receipt-id``.
    """

    def __init__(self, message: str, *, receipt: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.receipt = receipt


class LimitExceeded(ProtocolError):
    """A size or count cap was crossed (frame, header, body, subscriptions, unacked backlog)."""


class UnsupportedVersion(ProtocolError):
    """The client accepts none of the STOMP versions this server speaks."""

    def __init__(self, message: str, supported: tuple[str, ...]) -> None:
        super().__init__(message)
        self.supported = supported


class UsageError(StompError):
    """The local caller misused the API, for example by building an unencodable frame."""


class InvalidState(UsageError):
    """The requested move is not in the transition table for the current state."""
