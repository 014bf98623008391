"""Pure (sans-I/O) STOMP server core, 1.2 with 1.1 and 1.0 clients too: bytes in, events
out, bytes to send.

Nothing here reads a socket, starts a task or looks at a clock; the caller passes the time
(seconds, any monotonic origin) wherever it matters.

Modules:

- ``frames``: the ``Frame`` value, header encoding per version, serialization, pre-encoded
  MESSAGE tails.
- ``parser``: ``FrameParser``, an incremental parser bounded by ``Limits``.
- ``heartbeat``: heart-beat negotiation and ``HeartbeatMonitor``.
- ``state``: the connection states and their transition table.
- ``handshake``: version negotiation and the CONNECT / CONNECTED headers.
- ``subscriptions``: subscription bookkeeping and acknowledgement tracking.
- ``events``: what ``ServerConnection.events_received()`` yields.
- ``connection``: ``ServerConnection``, the server side of one STOMP session.

Every exception raised on purpose derives from one base (defined in ``exceptions``)::

    StompError
    ├── ProtocolError           the peer sent malformed or forbidden input; ``message`` is short
    │   │                       and safe to put in the ERROR frame's ``message`` header
    │   ├── LimitExceeded       a frame, header, body, subscription or backlog cap was crossed
    │   └── UnsupportedVersion  no STOMP version in common with the client's accept-version
    └── UsageError              the local caller misused the API (an unencodable frame)
        └── InvalidState        a move the connection's current state does not allow
"""
