"""The SockJS protocol (pure): what ``sockjs-client`` 1.6 speaks when a browser cannot open a
WebSocket, under the STOMP endpoint's prefix (``/ws``). No I/O and no clock of its own: the
HTTP and WebSocket layers (:mod:`ws_edge.sockjs_http`, :mod:`ws_edge.links`) feed it bytes and
the time, and write what it returns.

URLs under the prefix::

    GET  /ws/info                                   websocket, origins, cookie_needed, entropy
    GET  /ws/{server}/{session}/websocket           frames over a WebSocket
    POST /ws/{server}/{session}/xhr_streaming       a response that streams frames
    GET  /ws/{server}/{session}/eventsource         the same as Server-Sent Events
    POST /ws/{server}/{session}/xhr                 a long poll: one frame per response
    POST /ws/{server}/{session}/xhr_send            the client's messages (a JSON array)

Frames: ``o`` (open), ``h`` (heartbeat), ``a[...]`` (messages, a JSON array of strings),
``c[code,"reason"]`` (close). Here each message is one STOMP frame, both ways.

A session (:class:`Session`) outlives the HTTP requests that carry it: frames for it wait in a
bounded queue (:class:`~ws_edge.outbound.OutboundBuffer`'s rule: past the cap the client is too
slow and the session closes), one receiving request at a time takes them (a second one gets
``c[2010,...]``), a streaming response ends after a bounded number of bytes (the client opens
the next one), and a session no request has received for ``disconnect_delay`` seconds expires.
A closed session answers ``c[code,reason]`` of its close to whoever still asks, until it is
forgotten.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

OPEN = b"o"
HEARTBEAT = b"h"
STILL_OPEN = (2010, "Another connection still open")
GO_AWAY = (3000, "Go away!")

# A streaming response is recycled after this many bytes of frames (sockjs-client opens the
# next one at once); browsers keep a streaming XHR's whole text in memory until it ends.
STREAM_LIMIT_BYTES = 128 * 1024
HEARTBEAT_SECONDS = 25.0
DISCONNECT_DELAY_SECONDS = 5.0

# What the two streaming transports send before the first frame: 2 KiB of "h" for
# xhr_streaming (browsers deliver a streaming XHR's first bytes only past a threshold), one
# empty line for EventSource.
XHR_STREAMING_PRELUDE = b"h" * 2048 + b"\n"
EVENTSOURCE_PRELUDE = b"\r\n"

# Characters some browsers mangle inside a JSON string read from a stream: sent as \\uXXXX.
_UNSAFE = re.compile(
    "[\u0000-\u001f\u007f-\u009f\u00ad\u0600-\u0604\u070f\u17b4\u17b5"
    "\u200c-\u200f\u2028-\u202f\u2060-\u206f\ufeff\ufff0-\uffff]"
)


class Transport(enum.Enum):
    WEBSOCKET = "websocket"
    XHR_STREAMING = "xhr_streaming"
    EVENTSOURCE = "eventsource"
    XHR = "xhr"
    XHR_SEND = "xhr_send"

    @property
    def receives(self) -> bool:
        """It carries frames to the client (all but ``xhr_send``)."""
        return self is not Transport.XHR_SEND

    @property
    def streams(self) -> bool:
        return self in (Transport.XHR_STREAMING, Transport.EVENTSOURCE)

    @property
    def method(self) -> str:
        return "GET" if self in (Transport.WEBSOCKET, Transport.EVENTSOURCE) else "POST"


@dataclass(frozen=True, slots=True)
class Info:
    """``{prefix}/info``."""


@dataclass(frozen=True, slots=True)
class Greeting:
    """``{prefix}`` or ``{prefix}/``: the welcome text."""


@dataclass(frozen=True, slots=True)
class SessionRoute:
    server: str
    session: str
    transport: Transport


Route = Info | Greeting | SessionRoute

# A server or session id: no dots, no slashes, not empty (the protocol's rule), and bounded.
_ID = r"[^/.]{1,64}"
_SESSION_PATH = re.compile(rf"/({_ID})/({_ID})/([a-z_]+)")


def route(path: str, prefix: str) -> Route | None:
    """What a request path under ``prefix`` asks for; None for anything else."""
    if not path.startswith(prefix):
        return None
    rest = path[len(prefix) :]
    if rest in ("", "/"):
        return Greeting()
    if rest == "/info":
        return Info()
    match = _SESSION_PATH.fullmatch(rest)
    if match is None:
        return None
    try:
        transport = Transport(match.group(3))
    except ValueError:
        return None
    return SessionRoute(match.group(1), match.group(2), transport)


# -- frames --------------------------------------------------------------------------------


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def messages_frame(messages: Sequence[str]) -> bytes:
    """``a[...]``: ``messages`` as a JSON array, unsafe characters escaped."""
    text = msgspec.json.encode(list(messages)).decode()
    return b"a" + _UNSAFE.sub(_escape, text).encode()


def close_frame(code: int, reason: str) -> bytes:
    return b"c" + msgspec.json.encode([code, reason])


class BadPayload(ValueError):
    """What a client sent is not SockJS messages (the text is the answer's body)."""


def parse_messages(body: bytes) -> list[str]:
    """The messages in an ``xhr_send`` body or a WebSocket message: a JSON array of strings
    (or, over a WebSocket, one JSON string)."""
    if not body:
        raise BadPayload("Payload expected.")
    try:
        decoded = msgspec.json.decode(body, type=list[str] | str)
    except msgspec.DecodeError:
        raise BadPayload("Broken JSON encoding.") from None
    return [decoded] if isinstance(decoded, str) else decoded


def framed(transport: Transport, frame: bytes) -> bytes:
    """``frame`` as ``transport`` writes it in an HTTP response."""
    if transport is Transport.EVENTSOURCE:
        return b"data: " + frame + b"\r\n\r\n"
    return frame + b"\n"


def prelude(transport: Transport) -> bytes:
    if transport is Transport.XHR_STREAMING:
        return XHR_STREAMING_PRELUDE
    if transport is Transport.EVENTSOURCE:
        return EVENTSOURCE_PRELUDE
    return b""


def info(websocket: bool, entropy: int) -> bytes:
    """The ``/info`` answer. No cookie is asked for: a session lives on the edge that opened
    it, so the route to the edges must be sticky for the HTTP transports (docs/operations.md)."""
    return msgspec.json.encode(
        {"websocket": websocket, "origins": ["*:*"], "cookie_needed": False, "entropy": entropy}
    )


# -- a session -----------------------------------------------------------------------------


class State(enum.Enum):
    NEW = "new"  # the open frame is not sent yet
    OPEN = "open"
    CLOSING = "closing"  # close asked: what is queued goes first, then the close frame
    CLOSED = "closed"  # the close frame is out (or the session expired)


class Attach(enum.Enum):
    ATTACHED = "attached"
    BUSY = "busy"  # another request receives: this one gets c[2010,...]
    CLOSED = "closed"  # the session is over: the request gets its close frame


class Session:
    """One SockJS session's frames on their way out, and who receives them."""

    __slots__ = (
        "_close",
        "_last_write",
        "_max",
        "_pending",
        "_seen",
        "_size",
        "delay",
        "overflowed",
        "receiving",
        "state",
    )

    def __init__(self, max_bytes: int, now: float, disconnect_delay: float) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self._max = max_bytes
        self._pending: deque[str] = deque()
        self._size = 0
        self._close: tuple[int, str] | None = None
        self._seen = now  # the last time a request received (or the session was made)
        self._last_write = now
        self.delay = disconnect_delay
        self.state = State.NEW
        self.receiving = False
        self.overflowed = False

    @property
    def max_bytes(self) -> int:
        return self._max

    @property
    def buffered(self) -> int:
        """Bytes of messages waiting for a receiver."""
        return self._size

    @property
    def close_reason(self) -> tuple[int, str] | None:
        return self._close

    def push(self, messages: Sequence[str], size: int | None = None) -> bool:
        """Queue ``messages`` (``size``: their bytes in UTF-8, when the caller knows it); False
        when the queue would pass its cap (the client is too slow: what was queued is dropped,
        and the caller closes the session). Once a close is asked, nothing more is queued."""
        if self.overflowed or self._close is not None or self.state is State.CLOSED:
            return not self.overflowed
        self._pending.extend(messages)
        self._size += sum(len(m.encode()) for m in messages) if size is None else size
        if self._size > self._max:
            self.overflowed = True
            self._pending.clear()
            self._size = 0
            return False
        return True

    def close(self, code: int, reason: str, *, drop_pending: bool = False) -> None:
        """Close after what is queued (``drop_pending``: at once); the next receiver gets the
        close frame."""
        if self.state is State.CLOSED or self._close is not None:
            return
        self._close = (code, reason)
        if drop_pending:
            self._pending.clear()
            self._size = 0
        if self.state is State.OPEN:  # a new one still sends its open frame first
            self.state = State.CLOSING

    def attach(self, now: float) -> Attach:
        if self.state is State.CLOSED:
            return Attach.CLOSED
        if self.receiving:
            return Attach.BUSY
        self.receiving = True
        self._seen = now
        return Attach.ATTACHED

    def detach(self, now: float) -> None:
        self.receiving = False
        self._seen = now

    def take(self, now: float, *, polling: bool = False) -> list[bytes]:
        """The frames the attached receiver writes now: the open frame first, then the queued
        messages as one ``a[...]``, then the close frame once nothing is left. A polling
        receiver takes one frame per response."""
        frames: list[bytes] = []
        if self.state is State.NEW:
            self.state = State.OPEN if self._close is None else State.CLOSING
            frames.append(OPEN)
            if polling:
                return self._wrote(frames, now)
        if self._pending:
            frames.append(messages_frame(self._pending))
            self._pending.clear()
            self._size = 0
            if polling:
                return self._wrote(frames, now)
        if self.state is State.CLOSING and self._close is not None:
            frames.append(close_frame(*self._close))
            self.state = State.CLOSED
        return self._wrote(frames, now)

    def _wrote(self, frames: list[bytes], now: float) -> list[bytes]:
        if frames:
            self._last_write = now
        return frames

    def goodbye(self) -> bytes:
        """What a request to a closed session gets."""
        return close_frame(*(self._close or GO_AWAY))

    def heartbeat_at(self, every: float = HEARTBEAT_SECONDS) -> float:
        """When the attached receiver sends ``h`` if nothing else went out."""
        return self._last_write + every

    def heartbeat(self, now: float) -> bytes:
        self._last_write = now
        return HEARTBEAT

    def expired(self, now: float) -> bool:
        """No request has received for ``delay`` seconds: the client is gone."""
        return not self.receiving and now - self._seen >= self.delay

    def expire(self) -> None:
        """The client is gone: nothing more goes out."""
        self._pending.clear()
        self._size = 0
        if self._close is None:
            self._close = GO_AWAY
        self.state = State.CLOSED
