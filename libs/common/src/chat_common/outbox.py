"""Writing events to the transactional outbox (``chat_message_outbox``), for every service
that publishes through outbox-relay (needs ``chat-common[db]``).

A service writes its event rows in the transaction of the change they announce, so an event
goes out if and only if the change committed; the relay publishes each row to ``exchange``
with its routing key and headers (a ``CC`` header lists further routing keys: RabbitMQ's
sender-selected distribution). Rows of one session (``session_id``) are published in the
order they were written; rows without a session are unordered. After the commit (or inside
the transaction, in the same round trip), :func:`notify` wakes the relays; a lost wake-up
costs at most their poll interval.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .db import Conn

CHANNEL = "chat_outbox"
"""The channel of the relays' LISTEN."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    session_id: uuid.UUID | None
    routing_key: str
    event_type: str
    headers: Mapping[str, object]
    payload: bytes


async def add_outbox(conn: Conn, entries: Sequence[OutboxEntry]) -> None:
    """Queue events for the relay (wake it with :func:`notify`)."""
    await conn.executemany(
        """
        INSERT INTO chat_message_outbox (session_id, routing_key, event_type, headers, payload)
        VALUES ($1, $2, $3, $4::jsonb, $5)
        """,
        [
            (e.session_id, e.routing_key, e.event_type, json.dumps(dict(e.headers)), e.payload)
            for e in entries
        ],
    )


async def notify(conn: Conn) -> None:
    """Wake the relays (delivered at the commit of the transaction it runs in, if any)."""
    await conn.execute("SELECT pg_notify($1, '')", CHANNEL)


SESSION_CHANGED_CHANNEL = "chat_session_changed"
"""The channel on which a change of a session's rules (a block or an unblock) is told to the
services that cache them (message-svc's roster); the payload is the session id."""


async def notify_session_changed(conn: Conn, session_id: uuid.UUID) -> None:
    """Tell the caches that ``session_id`` changed (delivered at the commit, if in one)."""
    await conn.execute("SELECT pg_notify($1, $2)", SESSION_CHANGED_CHANNEL, str(session_id))
