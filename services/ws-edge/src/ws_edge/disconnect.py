"""Why the edge closes a connection (pure): one typed reason per cause, with the WebSocket
close code the client sees and the label the ``chat_ws_disconnects_total`` metric counts.

The STOMP core reports its own reasons (:class:`chat_stomp.events.CloseReason`); the edge
adds those that only the I/O layer can see (a slow reader, a restart, a lost broker, an expired
token) and maps everything to one :class:`Disconnect`.
"""

from __future__ import annotations

import enum

from chat_stomp.events import CloseReason


class Disconnect(enum.Enum):
    """``value`` is the metric label; ``code`` and ``reason`` go in the WebSocket close frame."""

    CLIENT = "client_disconnect"
    """The client sent DISCONNECT (or closed the socket)."""
    UNAUTHENTICATED = "unauthenticated"
    """No token, or a bad or expired one, at CONNECT."""
    TOKEN_EXPIRED = "token_expired"
    PROTOCOL_ERROR = "protocol_error"
    LIMIT_EXCEEDED = "limit_exceeded"
    REFUSED = "refused"
    """The edge refused what the client asked (a subscription, a destination)."""
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    SLOW_CONSUMER = "slow_consumer"
    SHUTDOWN = "shutdown"
    BROKER_LOST = "broker_lost"
    TRANSPORT_LOST = "transport_lost"
    """The socket went away without a goodbye."""
    USER_DELETED = "user_deleted"
    """FlairBit deleted the user's account: every connection of theirs closes."""

    @property
    def code(self) -> int:
        return _CODES[self][0]

    @property
    def reason(self) -> str:
        return _CODES[self][1]


_CODES: dict[Disconnect, tuple[int, str]] = {
    Disconnect.CLIENT: (1000, ""),
    Disconnect.UNAUTHENTICATED: (1008, "unauthenticated"),
    Disconnect.TOKEN_EXPIRED: (1008, "token expired"),
    Disconnect.PROTOCOL_ERROR: (1002, "STOMP protocol error"),
    Disconnect.LIMIT_EXCEEDED: (1009, "STOMP limit exceeded"),
    Disconnect.REFUSED: (1008, "refused"),
    Disconnect.HEARTBEAT_TIMEOUT: (1001, "heart-beat timeout"),
    Disconnect.SLOW_CONSUMER: (1008, "client too slow: outbound buffer full"),
    Disconnect.SHUTDOWN: (1012, "edge restarting; reconnect"),
    Disconnect.BROKER_LOST: (1013, "broker unavailable; reconnect later"),
    Disconnect.TRANSPORT_LOST: (1006, ""),
    Disconnect.USER_DELETED: (1008, "USER_DELETED: the account was deleted"),
}

_FROM_CORE = {
    CloseReason.DISCONNECT: Disconnect.CLIENT,
    CloseReason.REJECTED: Disconnect.UNAUTHENTICATED,
    CloseReason.PROTOCOL_ERROR: Disconnect.PROTOCOL_ERROR,
    CloseReason.LIMIT_EXCEEDED: Disconnect.LIMIT_EXCEEDED,
    CloseReason.SERVER_ERROR: Disconnect.REFUSED,
    CloseReason.HEARTBEAT_TIMEOUT: Disconnect.HEARTBEAT_TIMEOUT,
}


def from_core(reason: CloseReason | None) -> Disconnect:
    """The edge's reason for a close the STOMP core decided (None: the transport went away)."""
    return Disconnect.TRANSPORT_LOST if reason is None else _FROM_CORE[reason]
