"""Connection states and the table of legal moves between them (after h11's ``_state``).

::

    AWAITING_CONNECT --CONNECT frame--> AUTHENTICATING --accept()--> CONNECTED
           |                                 |                           |
           +--------- fail --------+-- reject() / fail --+-- DISCONNECT / fail
                                   v                     v               v
                                 CLOSED <----------------+---------------+

``fail`` covers a protocol violation by the peer, ``send_error()``, a heart-beat timeout and a
lost transport. A move that is not in the table raises ``InvalidState``.
"""

from __future__ import annotations

import enum

from .exceptions import InvalidState


class ConnectionState(enum.Enum):
    AWAITING_CONNECT = "awaiting-connect"
    AUTHENTICATING = "authenticating"
    """CONNECT received; waiting for the caller to accept() or reject()."""
    CONNECTED = "connected"
    CLOSED = "closed"


class Trigger(enum.Enum):
    CONNECT_FRAME = "connect-frame"
    ACCEPT = "accept"
    REJECT = "reject"
    DISCONNECT_FRAME = "disconnect-frame"
    FAIL = "fail"
    TRANSPORT_LOST = "transport-lost"


_S = ConnectionState
_T = Trigger

TRANSITIONS: dict[tuple[ConnectionState, Trigger], ConnectionState] = {
    (_S.AWAITING_CONNECT, _T.CONNECT_FRAME): _S.AUTHENTICATING,
    (_S.AWAITING_CONNECT, _T.FAIL): _S.CLOSED,
    (_S.AWAITING_CONNECT, _T.TRANSPORT_LOST): _S.CLOSED,
    (_S.AUTHENTICATING, _T.ACCEPT): _S.CONNECTED,
    (_S.AUTHENTICATING, _T.REJECT): _S.CLOSED,
    (_S.AUTHENTICATING, _T.FAIL): _S.CLOSED,
    (_S.AUTHENTICATING, _T.TRANSPORT_LOST): _S.CLOSED,
    (_S.CONNECTED, _T.DISCONNECT_FRAME): _S.CLOSED,
    (_S.CONNECTED, _T.FAIL): _S.CLOSED,
    (_S.CONNECTED, _T.TRANSPORT_LOST): _S.CLOSED,
    (_S.CLOSED, _T.TRANSPORT_LOST): _S.CLOSED,
}


class ConnectionStateMachine:
    """Holds the current state; ``process`` applies one move from ``TRANSITIONS``."""

    def __init__(self) -> None:
        self.state = ConnectionState.AWAITING_CONNECT

    def can(self, trigger: Trigger) -> bool:
        return (self.state, trigger) in TRANSITIONS

    def process(self, trigger: Trigger) -> ConnectionState:
        try:
            self.state = TRANSITIONS[self.state, trigger]
        except KeyError:
            raise InvalidState(f"cannot {trigger.value} in state {self.state.value}") from None
        return self.state
