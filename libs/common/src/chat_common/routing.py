"""RabbitMQ names and routing keys shared by the publishers and the WebSocket edge.

Routing keys never hold raw emails: dots and ``#``/``*`` would change topic matching. A user's
key is a hash of the normalised email; a session's key is its UUID.
"""

from __future__ import annotations

import hashlib
import uuid

EVENTS_EXCHANGE = "chat.events"
# Typing events, published by the edges; bound into chat.events (every key), so they reach the
# queues bound there, and an edge can tell them from the relay's events by this exchange name.
TYPING_EXCHANGE = "chat.typing"
# Presence events, published by the edges, bound into chat.events the same way (an edge fans
# out only presence events that came through it, and presence events only from it).
PRESENCE_EXCHANGE = "chat.presence"
# Commands for message-svc (a direct exchange: each send queue is bound by its own name).
COMMANDS_EXCHANGE = "chat.commands"
SEND_QUEUE = "chat.send"
EDGE_QUEUE_PREFIX = "ws-edge."  # each edge instance's own queue: ws-edge.{instance}
SEND_DEAD_LETTER_EXCHANGE = "chat.send.dlx"
SEND_DEAD_LETTER_QUEUE = "chat.send.dead"

# AMQP header names carried from publisher to edge (and into STOMP MESSAGE frames).
EVENT_HEADER = "x-event"
SESSION_HEADER = "x-session-id"
SEQ_HEADER = "x-seq"
RECEIPT_HEADER = "x-receipt"
CONNECTION_HEADER = "x-connection"


def session_key(session_id: uuid.UUID | str) -> str:
    return f"session.{uuid.UUID(str(session_id))}"


def user_key(email: str) -> str:
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return f"user.{digest}"
