"""What ``ServerConnection.events_received()`` yields: one frozen dataclass per kind."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .frames import Frame, Headers, first_header


class AckMode(enum.Enum):
    AUTO = "auto"
    CLIENT = "client"
    """Cumulative: an ACK covers that message and every earlier one of the subscription."""
    CLIENT_INDIVIDUAL = "client-individual"


class CloseReason(enum.Enum):
    """Why the connection ended; a typed disconnect reason for logs and metrics."""

    DISCONNECT = "disconnect"
    REJECTED = "rejected"
    PROTOCOL_ERROR = "protocol-error"
    LIMIT_EXCEEDED = "limit-exceeded"
    SERVER_ERROR = "server-error"
    HEARTBEAT_TIMEOUT = "heartbeat-timeout"


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """A CONNECT (or STOMP) frame: authenticate, then call ``accept()`` or ``reject()``."""

    frame: Frame
    version: str
    """The version that ``accept()`` will announce: the highest one both sides speak."""
    accepted_versions: tuple[str, ...]
    login: str | None
    passcode: str | None
    authorization_header: str | None
    host: str | None
    client_heartbeat: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A SUBSCRIBE. The caller authorises it, then answers ``receipt`` with ``send_receipt()``
    (or refuses the subscription with ``send_error()``)."""

    subscription_id: str
    destination: str
    ack_mode: AckMode
    headers: Headers

    @property
    def receipt(self) -> str | None:
        return first_header(self.headers, "receipt")

    def header(self, name: str) -> str | None:
        return first_header(self.headers, name)


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    subscription_id: str
    destination: str


@dataclass(frozen=True, slots=True)
class SendReceived:
    """A SEND frame. If ``receipt`` is set, answer it with ``send_receipt()`` when done."""

    destination: str
    headers: Headers
    body: bytes
    receipt: str | None

    def header(self, name: str) -> str | None:
        return first_header(self.headers, name)


@dataclass(frozen=True, slots=True)
class Acked:
    """An ACK; ``message_ids`` lists every message it settled, oldest first."""

    subscription_id: str
    destination: str
    ack_id: str
    message_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Nacked:
    """A NACK; like ``Acked`` (cumulative in ``client`` mode)."""

    subscription_id: str
    destination: str
    ack_id: str
    message_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DisconnectRequested:
    """The client said goodbye; its RECEIPT, if asked for, is already queued."""

    receipt: str | None


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    """A bare end-of-line arrived (the connection already noted the peer is alive)."""


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The connection is now closed: flush ``data_to_send()``, then close the transport."""

    reason: CloseReason
    message: str


Event = (
    ConnectRequested
    | Subscribed
    | Unsubscribed
    | SendReceived
    | Acked
    | Nacked
    | DisconnectRequested
    | HeartbeatReceived
    | ConnectionTerminated
)
