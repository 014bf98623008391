"""Incremental STOMP frame parser, bounded in memory.

``FrameParser.feed`` takes byte chunks split anywhere and returns the frames and heart-beats
completed so far. The parser keeps only the bytes of the frame in progress, never more than
``Limits.max_frame_bytes``; a frame that announces a ``content-length`` over ``max_body`` is
refused as soon as its headers end, before any of the body arrives.

Once input is found invalid the parser is failed for good: ``feed`` raises that same
``ProtocolError`` on every later call. When the fault follows frames completed in the same
chunk, those frames are returned first and the fault is kept in ``error`` (and raised by the
next ``feed``), so nothing the peer sent correctly is lost. A fault found once a frame's
``receipt`` header has been read carries it (``ProtocolError.receipt``).

Header lines are split at the first colon as they arrive and decoded when the frame is complete,
as ``version`` writes them (see ``frames``; ``None`` until the connection has sent CONNECTED).
A line may end with CRLF in every version; any other carriage return in a header line is
refused, since no version can carry it there unescaped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

from .exceptions import LimitExceeded, ProtocolError
from .frames import (
    CLIENT_COMMANDS,
    LATEST_VERSION,
    Frame,
    Header,
    check_version,
    decode_headers,
    first_header,
)

_LF = 0x0A
_CR = 0x0D
_MAX_LENGTH_DIGITS = 12


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on what one peer may make the server hold; sizes in bytes.

    The first four bound the parser; the rest bound a ``ServerConnection``.
    """

    max_frame_bytes: int = 64 * 1024
    """Command line through the closing NUL."""
    max_headers: int = 32
    max_header_line: int = 4 * 1024
    """One command or header line, without its end-of-line."""
    max_body: int = 16 * 1024
    max_subscriptions: int = 64
    max_unacked: int = 1024
    """Messages delivered in a client ack mode and not yet acknowledged, per connection."""
    max_pending_frames: int = 16
    """Frames pipelined after CONNECT that wait for the caller's accept()."""

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) < 1:
                raise ValueError(f"{field.name} must be positive")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A bare end-of-line between frames: the peer is alive."""


HEARTBEAT_EVENT = Heartbeat()

ParseEvent = Frame | Heartbeat


class _Stage(enum.Enum):
    BETWEEN_FRAMES = enum.auto()
    HEADERS = enum.auto()
    BODY = enum.auto()


class FrameParser:
    """Turns a byte stream into ``Frame`` and ``Heartbeat`` events."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        commands: frozenset[str] = CLIENT_COMMANDS,
        version: str | None = LATEST_VERSION,
    ) -> None:
        check_version(version)
        self._limits = limits or Limits()
        self._commands = commands
        self._version = version
        self._buf = bytearray()  # starts at the first byte of the frame in progress
        self._stage = _Stage.BETWEEN_FRAMES
        self._pos = 0  # start of the next unparsed line, or of the body
        self._scan = 0  # where the next search for LF or NUL resumes
        self._command = ""
        self._headers: list[Header] = []  # as on the wire, not yet decoded
        self._length: int | None = None
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for the frame in progress (never above ``max_frame_bytes``)."""
        return len(self._buf)

    @property
    def version(self) -> str | None:
        """The STOMP version whose header encoding frames completed from now on are read with."""
        return self._version

    @version.setter
    def version(self, version: str | None) -> None:
        check_version(version)
        self._version = version

    @property
    def error(self) -> ProtocolError | None:
        """The fault that failed the parser, if any."""
        return self._error

    def feed(self, data: bytes) -> list[ParseEvent]:
        """Consume ``data``; return the events it completed, in order."""
        if self._error is not None:
            raise self._error
        events: list[ParseEvent] = []
        limit = self._limits.max_frame_bytes
        offset = 0
        try:
            while offset < len(data):
                room = limit - len(self._buf)
                chunk = data[offset : offset + room]
                self._buf += chunk
                offset += len(chunk)
                self._parse(events)
                if len(self._buf) >= limit:
                    raise LimitExceeded("frame too large")
        except ProtocolError as exc:
            self._fail(exc)
            if not events:
                raise
        return events

    def _fail(self, error: ProtocolError) -> None:
        if error.receipt is None:
            error.receipt = self._receipt_in_progress()
        self._error = error
        self._buf = bytearray()
        self._headers = []

    def _receipt_in_progress(self) -> str | None:
        raw = first_header(tuple(self._headers), "receipt")
        if raw is None:
            return None
        try:
            decoded = decode_headers(self._command, (("receipt", raw),), self._version)
        except ProtocolError:
            return None
        return decoded[0][1]

    def _parse(self, events: list[ParseEvent]) -> None:
        while True:
            if self._stage is _Stage.BETWEEN_FRAMES:
                if not self._skip_heartbeats(events):
                    return
            elif self._stage is _Stage.HEADERS:
                if not self._parse_lines():
                    return
            else:
                frame = self._parse_body()
                if frame is None:
                    return
                events.append(frame)

    def _skip_heartbeats(self, events: list[ParseEvent]) -> bool:
        buf = self._buf
        skip = 0
        frame_starts = False
        while skip < len(buf):
            if buf[skip] == _LF:
                skip += 1
            elif buf[skip] == _CR and skip + 1 < len(buf) and buf[skip + 1] == _LF:
                skip += 2
            elif buf[skip] == _CR and skip + 1 == len(buf):
                break  # maybe the first half of a CRLF: wait for the next byte
            else:
                frame_starts = True
                break
            events.append(HEARTBEAT_EVENT)
        del buf[:skip]
        if frame_starts:
            self._stage = _Stage.HEADERS
            self._pos = self._scan = 0
            self._command = ""
        return frame_starts

    def _next_line(self) -> bytes | None:
        buf = self._buf
        newline = buf.find(b"\n", self._scan)
        if newline < 0:
            if len(buf) - self._pos > self._limits.max_header_line + 1:
                raise LimitExceeded("header line too long")
            self._scan = len(buf)
            return None
        line = bytes(buf[self._pos : newline])
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self._limits.max_header_line:
            raise LimitExceeded("header line too long")
        self._pos = self._scan = newline + 1
        return line

    def _parse_lines(self) -> bool:
        while (line := self._next_line()) is not None:
            if not self._command:
                self._command = self._parse_command(line)
            elif line:
                self._headers.append(self._parse_header(line))
            else:
                self._start_body()
                return True
        return False

    def _parse_command(self, line: bytes) -> str:
        command = line.decode("ascii", "replace")
        if command not in self._commands:
            raise ProtocolError("unknown command")
        return command

    def _parse_header(self, line: bytes) -> Header:
        if len(self._headers) >= self._limits.max_headers:
            raise LimitExceeded("too many headers")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("header is not valid UTF-8") from None
        if "\r" in text:
            raise ProtocolError("carriage return in header")
        name, colon, value = text.partition(":")
        if not colon or not name:
            raise ProtocolError("malformed header line")
        return name, value

    def _start_body(self) -> None:
        limits = self._limits
        self._length = None
        for name, value in self._headers:
            if name == "content-length":
                if not (value.isascii() and value.isdigit()):
                    raise ProtocolError("invalid content-length")
                if len(value) > _MAX_LENGTH_DIGITS or int(value) > limits.max_body:
                    raise LimitExceeded("body too large")
                self._length = int(value)
                if self._pos + self._length + 1 > limits.max_frame_bytes:
                    raise LimitExceeded("frame too large")
                break
        self._stage = _Stage.BODY
        self._scan = self._pos

    def _parse_body(self) -> Frame | None:
        buf = self._buf
        start = self._pos
        if self._length is not None:
            end = start + self._length
            if len(buf) <= end:
                return None
            if buf[end] != 0:
                raise ProtocolError("frame body is not followed by NUL")
        else:
            end = buf.find(b"\0", self._scan)
            if end < 0:
                self._scan = len(buf)
                if len(buf) - start > self._limits.max_body:
                    raise LimitExceeded("body too large")
                return None
            if end - start > self._limits.max_body:
                raise LimitExceeded("body too large")
        headers = decode_headers(self._command, tuple(self._headers), self._version)
        frame = Frame(self._command, headers, bytes(buf[start:end]))
        del buf[: end + 1]
        self._headers = []
        self._stage = _Stage.BETWEEN_FRAMES
        self._pos = self._scan = 0
        return frame
