"""What message-svc publishes: events as outbox entries (durable) and direct replies.

One outbox row per event: its routing key is the session's, and RabbitMQ's sender-selected
distribution (the ``CC`` header) also routes it to each participant's user key. A queue bound
by several of those keys still receives one copy.
"""

from __future__ import annotations

import msgspec

from chat_common import routing, tracing
from chat_common.dto import MessageChange, MessageView, ReceiptEvent

from .repository import Member, OutboxEntry, SeqTemplate

# Where the seq sits in an encoded message: the fields before it are two UUIDs, so the first
# occurrence is the key itself, never text from the content.
_SEQ_PLACEHOLDER = b',"seq":0,'


def _entry(
    event: str,
    view: MessageView | ReceiptEvent | MessageChange,
    members: list[Member],
    seq: int | None,
) -> OutboxEntry:
    headers: dict[str, object] = {
        routing.EVENT_HEADER: event,
        routing.SESSION_HEADER: str(view.session_id),
        "CC": [routing.user_key(m.user_email) for m in members],
    }
    if seq is not None:
        headers[routing.SEQ_HEADER] = seq
    tracing.inject(headers)
    return OutboxEntry(
        session_id=view.session_id,
        routing_key=routing.session_key(view.session_id),
        event_type=event,
        headers=headers,
        payload=msgspec.json.encode(view),
    )


def message_event(view: MessageView, members: list[Member]) -> OutboxEntry:
    return _entry("message", view, members, view.seq)


def change_event(change: MessageChange, members: list[Member]) -> OutboxEntry:
    """An edit or a delete: ``x-event`` ``edit``/``delete`` with the change's own seq, on the
    session's key and both participants' keys, as a message event."""
    return _entry(change.change, change, members, change.seq)


def receipt_event(receipt: ReceiptEvent, members: list[Member]) -> OutboxEntry:
    return _entry("receipt", receipt, members, None)


def message_event_template(view: MessageView, members: list[Member]) -> SeqTemplate:
    """The outbox row of a message not stored yet: the database fills in the seq it allocates
    (``view.seq`` must be 0)."""
    if view.seq != 0:
        raise ValueError("a message event template is made with seq 0")
    entry = message_event(view, members)
    before, found, after = entry.payload.partition(_SEQ_PLACEHOLDER)
    if not found:
        raise ValueError("the encoded message has no seq field where expected")
    return SeqTemplate(
        entry=entry,
        before_seq=before + b',"seq":',
        after_seq=b"," + after,
        seq_header=routing.SEQ_HEADER,
    )
