"""The server side of one STOMP connection, sans I/O (after python-websockets' ``protocol``).

The I/O layer feeds bytes with ``receive_data(data, now)``, reads ``events_received()``, acts
on them (authenticate, route, store) through the methods below, and writes whatever
``data_to_send(now)`` returns. Once ``close_expected()`` is true it flushes that output and
closes the transport. Timers: call ``check_heartbeats(now)`` at ``next_deadline(now)``.

The core answers by itself: CONNECTED (on ``accept``), RECEIPT for UNSUBSCRIBE, ACK, NACK and
DISCONNECT, heart-beats, and an ERROR frame followed by closing for any protocol violation.
The receipts of SEND and SUBSCRIBE are the caller's to answer (``send_receipt``), once the work
is done or the subscription authorised. An ERROR about a frame that asked for a receipt carries
its ``receipt-id``.

Header encoding follows the version (see ``frames``): until CONNECTED is queued every frame is
written and read unescaped, as CONNECT is; from then on, as the negotiated version says
(``wire_version``). Frames that arrive between CONNECT and CONNECTED wait for ``accept()`` and
are decoded then, with the version CONNECTED announced.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from .events import (
    Acked,
    AckMode,
    CloseReason,
    ConnectionTerminated,
    DisconnectRequested,
    Event,
    HeartbeatReceived,
    Nacked,
    SendReceived,
    Subscribed,
    Unsubscribed,
)
from .exceptions import (
    InvalidState,
    LimitExceeded,
    ProtocolError,
    UnsupportedVersion,
    UsageError,
)
from .frames import (
    HEARTBEAT,
    EncodedMessage,
    Frame,
    Header,
    Headers,
    decode_headers,
    encode_message,
    error_frame,
    message_bytes,
    receipt_frame,
    serialize,
)
from .handshake import connected_frame, read_connect
from .heartbeat import HeartbeatMonitor, negotiate
from .parser import FrameParser, Heartbeat, Limits
from .state import ConnectionState, ConnectionStateMachine, Trigger
from .subscriptions import Subscription, SubscriptionRegistry

TRANSACTIONS_UNSUPPORTED = "transactions are not supported"
_LINE_BREAKS = re.compile(r"[\r\n]+")
_ACK_MODES = {mode.value: mode for mode in AckMode}


def _required(frame: Frame, name: str) -> str:
    value = frame.header(name)
    if value is None or not value:
        raise ProtocolError(f"{frame.command} requires a {name} header")
    return value


class ServerConnection:
    """State machine for one client connection; see the module docstring for the loop."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        server_name: str = "chat-ws-edge",
        heartbeat: tuple[int, int] = (10_000, 10_000),
        heartbeat_grace: float = 2.0,
    ) -> None:
        self.limits = limits or Limits()
        self.server_name = server_name
        self._server_heartbeat = heartbeat
        self._grace = heartbeat_grace
        self._machine = ConnectionStateMachine()
        self._parser = FrameParser(self.limits, version=None)
        self._subs = SubscriptionRegistry(
            max_subscriptions=self.limits.max_subscriptions,
            max_unacked=self.limits.max_unacked,
        )
        self._events: list[Event] = []
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._pipelined: list[Frame] = []
        self._monitor: HeartbeatMonitor | None = None
        self._client_heartbeat = (0, 0)
        self._connect_receipt: str | None = None
        self._wire_version: str | None = None
        self.version: str | None = None
        """The version agreed in CONNECT (announced by ``accept()``)."""
        self.user_name: str | None = None
        self.close_reason: CloseReason | None = None
        self._handlers: dict[str, Callable[[Frame], None]] = {
            "SEND": self._on_send,
            "SUBSCRIBE": self._on_subscribe,
            "UNSUBSCRIBE": self._on_unsubscribe,
            "ACK": self._on_ack,
            "NACK": self._on_ack,
            "DISCONNECT": self._on_disconnect,
        }

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._machine.state

    @property
    def is_closed(self) -> bool:
        return self._closed()

    def close_expected(self) -> bool:
        """True once the core is done: flush ``data_to_send()``, then close the transport."""
        return self._closed()

    def _closed(self) -> bool:  # a method, so mypy does not narrow it across calls
        return self._machine.state is ConnectionState.CLOSED

    @property
    def wire_version(self) -> str | None:
        """The version whose header encoding frames are written and read with: None (no
        escaping, as in CONNECT) until CONNECTED is queued, then ``version``."""
        return self._wire_version

    @property
    def subscriptions(self) -> Mapping[str, Subscription]:
        return self._subs

    @property
    def heartbeat(self) -> HeartbeatMonitor | None:
        """The negotiated heart-beat monitor, once connected."""
        return self._monitor

    @property
    def buffered_amount(self) -> int:
        """Bytes queued and not yet taken by ``data_to_send``."""
        return self._out_bytes

    # -- input ------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the transport (a WebSocket message, any split)."""
        if self._closed():
            return
        if data and self._monitor is not None:
            self._monitor.on_data_received(now)
        try:
            items = self._parser.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        for item in items:
            if self._closed():
                return
            if isinstance(item, Heartbeat):
                if self.state is ConnectionState.CONNECTED:
                    self._events.append(HeartbeatReceived())
            else:
                self._handle_frame(item)
        if self._parser.error is not None:
            self._fail(self._parser.error)

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def data_to_send(self, now: float) -> list[bytes]:
        """Take the queued output; ``now`` is when the caller writes it (for heart-beats)."""
        out, self._out = self._out, []
        self._out_bytes = 0
        if out and self._monitor is not None:
            self._monitor.on_data_sent(now)
        return out

    def connection_lost(self) -> None:
        """The transport is gone; drop queued output (no event is emitted)."""
        self._machine.process(Trigger.TRANSPORT_LOST)
        self._out, self._out_bytes = [], 0
        self._pipelined.clear()
        self._monitor = None

    # -- the caller's decisions -------------------------------------------------------------

    def accept(self, user_name: str, now: float) -> None:
        """Accept the pending CONNECT: queue CONNECTED and start heart-beating.

        Does nothing if the connection closed meanwhile (the peer may break the protocol
        while the caller is authenticating); raises ``InvalidState`` in any other state.
        """
        if self._closed():
            return
        if not self._machine.can(Trigger.ACCEPT) or self.version is None:
            raise InvalidState(f"cannot accept in state {self.state.value}")
        frame = connected_frame(self.version, self._server_heartbeat, self.server_name, user_name)
        data = serialize(frame)  # a UsageError (say, a newline in user_name) changes nothing
        send_ms = expect_ms = 0
        if self.version != "1.0":
            send_ms, expect_ms = negotiate(*self._client_heartbeat, *self._server_heartbeat)
        self._machine.process(Trigger.ACCEPT)
        self.user_name = user_name
        self._push(data)
        self._wire_version = self._parser.version = self.version
        self._monitor = HeartbeatMonitor(send_ms / 1000, expect_ms / 1000, self._grace, now=now)
        pipelined, self._pipelined = self._pipelined, []
        for early in pipelined:
            if self._closed():
                break
            self._handle_frame(early, undecoded=True)

    def reject(self, message: str, detail_body: bytes = b"") -> None:
        """Refuse the pending CONNECT: queue ERROR (with the CONNECT's ``receipt``, if it had
        one), then closed (no-op if already closed)."""
        if self._closed():
            return
        if not self._machine.can(Trigger.REJECT):
            raise InvalidState(f"cannot reject in state {self.state.value}")
        self._queue_error(message, self._connect_receipt, body=detail_body)
        self._close(Trigger.REJECT, CloseReason.REJECTED, message)

    def send_error(
        self,
        message: str,
        detail_body: bytes = b"",
        *,
        receipt_id: str | None = None,
        content_type: str = "text/plain",
    ) -> None:
        """Queue an ERROR frame and close; does nothing once closed. Pass ``receipt_id`` when
        refusing a frame that asked for a receipt (a SUBSCRIBE or SEND event's ``receipt``),
        and the ``content_type`` of a ``detail_body`` that is not plain text."""
        if self._closed():
            return
        self._queue_error(message, receipt_id, body=detail_body, content_type=content_type)
        self._close(Trigger.FAIL, CloseReason.SERVER_ERROR, message)

    def send_receipt(self, receipt_id: str) -> bool:
        """Answer a SEND's ``receipt``; False (dropped) if the connection is closed."""
        if not self._can_send():
            return False
        self._queue(receipt_frame(receipt_id))
        return True

    def send_message(
        self,
        subscription_id: str,
        destination: str,
        message_id: str,
        headers: Iterable[Header] = (),
        body: bytes = b"",
    ) -> bool:
        """Queue a MESSAGE; see ``send_encoded``."""
        return self.send_encoded(
            subscription_id, destination, message_id, encode_message(headers, body)
        )

    def send_encoded(
        self, subscription_id: str, destination: str, message_id: str, encoded: EncodedMessage
    ) -> bool:
        """Queue a MESSAGE built from a shared ``encode_message`` tail, written in this
        connection's version.

        Adds ``destination``, ``message-id``, ``subscription`` and, in a client ack mode,
        ``ack``. Returns False (nothing queued) when the connection is closed, the
        subscription is unknown (the client may have just unsubscribed) or a shared header
        cannot be written in this connection's version (a line break in a STOMP 1.0 value).
        Exceeding ``max_unacked`` closes the connection with an ERROR.
        """
        if not self._can_send():
            return False
        sub = self._subs.get(subscription_id)
        if sub is None:
            return False
        try:
            encoded.tail_for(self._wire_version)
        except UsageError:
            return False
        try:
            ack_id = self._subs.track(sub, message_id)
        except LimitExceeded as exc:
            self._fail(exc)
            return False
        self._push(
            message_bytes(
                encoded,
                destination=destination,
                message_id=message_id,
                subscription_id=subscription_id,
                ack_id=ack_id,
                version=self._wire_version,
            )
        )
        return True

    def check_heartbeats(self, now: float) -> None:
        """Queue a heart-beat if one is due; close if the peer went silent too long."""
        monitor = self._monitor
        if monitor is None or self.state is not ConnectionState.CONNECTED:
            return
        if monitor.peer_timed_out(now):
            message = "heart-beat timeout"
            self._queue_error(message)
            self._close(Trigger.FAIL, CloseReason.HEARTBEAT_TIMEOUT, message)
        elif monitor.need_to_send(now) and not self._out:
            self._push(HEARTBEAT)

    def next_deadline(self, now: float) -> float | None:
        """When ``check_heartbeats`` should run next; None if it never needs to."""
        if self._monitor is None or self.state is not ConnectionState.CONNECTED:
            return None
        return self._monitor.next_deadline(now)

    # -- frame handling ---------------------------------------------------------------------

    def _handle_frame(self, frame: Frame, *, undecoded: bool = False) -> None:
        """Act on one frame; ``undecoded``: its headers are still as on the wire (it arrived
        before CONNECTED) and are decoded now, with the negotiated version."""
        receipt = frame.header("receipt")
        try:
            if undecoded:
                receipt = self._decoded_receipt(frame.command, receipt)
                headers = decode_headers(frame.command, frame.headers, self._wire_version)
                frame = Frame(frame.command, headers, frame.body)
            self._dispatch(frame)
        except ProtocolError as exc:
            self._fail(exc, receipt)

    def _decoded_receipt(self, command: str, raw: str | None) -> str | None:
        if raw is None:
            return None
        try:
            return decode_headers(command, (("receipt", raw),), self._wire_version)[0][1]
        except ProtocolError:
            return None

    def _dispatch(self, frame: Frame) -> None:
        command, state = frame.command, self.state
        if command in ("CONNECT", "STOMP"):
            if state is not ConnectionState.AWAITING_CONNECT:
                raise ProtocolError("already connected")
            self._on_connect(frame)
        elif state is ConnectionState.AWAITING_CONNECT:
            raise ProtocolError("expected a CONNECT frame")
        elif command in ("BEGIN", "COMMIT", "ABORT"):
            raise ProtocolError(TRANSACTIONS_UNSUPPORTED)
        elif state is ConnectionState.AUTHENTICATING:
            if len(self._pipelined) >= self.limits.max_pending_frames:
                raise LimitExceeded("too many frames before CONNECTED")
            self._pipelined.append(frame)
        else:
            self._handlers[command](frame)

    def _on_connect(self, frame: Frame) -> None:
        request = read_connect(frame)
        self._machine.process(Trigger.CONNECT_FRAME)
        self.version = request.version
        self._connect_receipt = frame.header("receipt")
        self._client_heartbeat = request.client_heartbeat
        self._events.append(request)

    def _on_send(self, frame: Frame) -> None:
        if frame.header("transaction") is not None:
            raise ProtocolError(TRANSACTIONS_UNSUPPORTED)
        destination = _required(frame, "destination")
        receipt = frame.header("receipt")
        self._events.append(SendReceived(destination, frame.headers, frame.body, receipt))

    def _on_subscribe(self, frame: Frame) -> None:
        destination = _required(frame, "destination")
        sub_id = frame.header("id")
        if not sub_id:
            if self.version != "1.0":  # STOMP 1.0 made the id optional
                raise ProtocolError("SUBSCRIBE requires an id header")
            sub_id = destination
        mode = _ACK_MODES.get(frame.header("ack", "auto"))
        if mode is None:
            raise ProtocolError("invalid ack header")
        self._subs.add(sub_id, destination, mode)
        self._events.append(Subscribed(sub_id, destination, mode, frame.headers))
        # the receipt is the caller's to send, once it has authorised the subscription

    def _on_unsubscribe(self, frame: Frame) -> None:
        sub_id = frame.header("id")
        if not sub_id and self.version == "1.0":
            found = self._subs.find_by_destination(frame.header("destination", ""))
            sub_id = found.id if found is not None else None
        if not sub_id:
            raise ProtocolError("UNSUBSCRIBE requires an id header")
        sub = self._subs.remove(sub_id)
        self._events.append(Unsubscribed(sub.id, sub.destination))
        self._answer_receipt(frame)

    def _on_ack(self, frame: Frame) -> None:
        if frame.header("transaction") is not None:
            raise ProtocolError(TRANSACTIONS_UNSUPPORTED)
        settled = self._subs.settle_headers(
            frame.header("id"),
            frame.header("message-id"),
            frame.header("subscription"),
            by_message_id=self.version != "1.2",  # STOMP 1.0/1.1 ack by message-id
        )
        sub = settled.subscription
        kind = Acked if frame.command == "ACK" else Nacked
        self._events.append(kind(sub.id, sub.destination, settled.ack_id, settled.message_ids))
        self._answer_receipt(frame)

    def _on_disconnect(self, frame: Frame) -> None:
        receipt = self._answer_receipt(frame)
        self._events.append(DisconnectRequested(receipt))
        self._close(Trigger.DISCONNECT_FRAME, CloseReason.DISCONNECT, "client disconnected")

    # -- output and closing -----------------------------------------------------------------

    def _can_send(self) -> bool:
        if self.state is ConnectionState.CONNECTED:
            return True
        if self._closed():
            return False
        raise InvalidState(f"cannot send in state {self.state.value}")

    def _answer_receipt(self, frame: Frame) -> str | None:
        receipt = frame.header("receipt")
        if receipt is not None:
            self._queue(receipt_frame(receipt))
        return receipt

    def _fail(self, error: ProtocolError, receipt: str | None = None) -> None:
        if self._closed():
            return
        extra: tuple[Header, ...] = ()
        if isinstance(error, UnsupportedVersion):
            extra = (("version", ",".join(error.supported)),)
        self._queue_error(error.message, error.receipt if receipt is None else receipt, extra=extra)
        reason = (
            CloseReason.LIMIT_EXCEEDED
            if isinstance(error, LimitExceeded)
            else CloseReason.PROTOCOL_ERROR
        )
        self._close(Trigger.FAIL, reason, error.message)

    def _close(self, trigger: Trigger, reason: CloseReason, message: str) -> None:
        self._machine.process(trigger)
        self.close_reason = reason
        self._pipelined.clear()
        self._monitor = None
        self._events.append(ConnectionTerminated(reason, message))

    def _queue(self, frame: Frame) -> None:
        self._push(serialize(frame, self._wire_version))

    def _queue_error(
        self,
        message: str,
        receipt: str | None = None,
        *,
        extra: Headers = (),
        body: bytes = b"",
        content_type: str = "text/plain",
    ) -> None:
        """An ERROR frame that can always be written: the ``message`` on one line, and the
        ``receipt-id`` left out in the (caller-made) case that this version cannot carry it."""
        message = _LINE_BREAKS.sub(" ", message)
        frame = error_frame(
            message, receipt_id=receipt, extra=extra, body=body, content_type=content_type
        )
        try:
            data = serialize(frame, self._wire_version)
        except UsageError:
            frame = error_frame(message, extra=extra, body=body, content_type=content_type)
            data = serialize(frame, self._wire_version)
        self._push(data)

    def _push(self, data: bytes) -> None:
        self._out.append(data)
        self._out_bytes += len(data)
