"""STOMP frames: the value type, header encoding per protocol version, serialization.

A frame on the wire is a command line, header lines, a blank line, the body and a NUL octet.
Header names and values are UTF-8, written as the negotiated version says:

- STOMP 1.0, and any frame before a version is agreed (``version=None``): nothing is escaped,
  a backslash is an ordinary character; a name cannot hold CR, LF or a colon, a value cannot
  hold CR or LF.
- STOMP 1.1: line feed, colon and backslash are written ``\\n``, ``\\c``, ``\\\\``; a carriage
  return cannot be written.
- STOMP 1.2: as 1.1, and carriage return is written ``\\r``.

CONNECT and CONNECTED are never escaped, whatever the version (they are read before a version
is agreed); "none" (``version=None``) is how a connection writes and reads every frame until
CONNECTED has been sent. In 1.1 and 1.2 any backslash sequence other than the ones above is a
protocol error. The codec functions default to STOMP 1.2.

``encode_message`` prepares the part of a MESSAGE frame that is shared by every subscriber
(extra headers, content-length, body); ``EncodedMessage.tail_for`` serializes it once per
version in use (once in all when the versions would write it alike), so fan-out only writes
the few per-subscriber header lines in front of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import overload

from .exceptions import ProtocolError, UsageError

Header = tuple[str, str]
Headers = tuple[Header, ...]

CLIENT_COMMANDS: frozenset[str] = frozenset(
    {
        "CONNECT",
        "STOMP",
        "SEND",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "ACK",
        "NACK",
        "BEGIN",
        "COMMIT",
        "ABORT",
        "DISCONNECT",
    }
)
SERVER_COMMANDS: frozenset[str] = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})
ALL_COMMANDS: frozenset[str] = CLIENT_COMMANDS | SERVER_COMMANDS
RAW_HEADER_COMMANDS: frozenset[str] = frozenset({"CONNECT", "CONNECTED"})
"""Commands whose headers are never escaped, whatever the version."""

HEARTBEAT: bytes = b"\n"
"""What a heart-beat looks like on the wire: one end-of-line."""

# Headers the connection writes itself on every MESSAGE; callers may not supply them.
MESSAGE_RESERVED: frozenset[str] = frozenset(
    {"destination", "message-id", "subscription", "ack", "content-length"}
)

LATEST_VERSION = "1.2"
"""The version the codec functions assume when none is given."""

_ESCAPE_SEQUENCE = re.compile(r"\\(.?)", re.DOTALL)
_SPECIAL = frozenset("\\\r\n:")
"""Octets some version writes differently from another."""


@dataclass(frozen=True, slots=True, eq=False)
class _Dialect:
    """How one STOMP version writes and reads header names and values."""

    name: str
    escapes: dict[int, str]
    """A ``str.translate`` table; empty when nothing is escaped."""
    unescapes: dict[str, str] | None
    """What follows a backslash, and what it stands for; None: a backslash is literal."""
    unsendable_name: str
    unsendable_value: str


_RAW = _Dialect("1.0", {}, None, "\r\n:", "\r\n")
_V11 = _Dialect(
    "1.1",
    str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c"}),
    {"\\": "\\", "n": "\n", "c": ":"},
    "\r",
    "\r",
)
_V12 = _Dialect(
    "1.2",
    str.maketrans({"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"}),
    {"\\": "\\", "r": "\r", "n": "\n", "c": ":"},
    "",
    "",
)
_DIALECTS: dict[str | None, _Dialect] = {None: _RAW, "1.0": _RAW, "1.1": _V11, "1.2": _V12}


def _dialect(version: str | None, command: str = "") -> _Dialect:
    if command in RAW_HEADER_COMMANDS:
        return _RAW
    try:
        return _DIALECTS[version]
    except KeyError:
        raise UsageError(f"unknown STOMP version {version!r}") from None


def check_version(version: str | None) -> None:
    """Raise ``UsageError`` unless ``version`` is None, "1.0", "1.1" or "1.2"."""
    _dialect(version)


def first_header(headers: Headers, name: str) -> str | None:
    """The value of the first header called ``name`` (STOMP: repeated headers, first wins)."""
    for key, value in headers:
        if key == name:
            return value
    return None


@dataclass(frozen=True, slots=True)
class Frame:
    """One STOMP frame; headers keep their order and repeats, as received."""

    command: str
    headers: Headers = ()
    body: bytes = b""

    @overload
    def header(self, name: str) -> str | None: ...

    @overload
    def header(self, name: str, default: str) -> str: ...

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first occurrence of header ``name``, or ``default``."""
        value = first_header(self.headers, name)
        return default if value is None else value


def receipt_frame(receipt_id: str) -> Frame:
    return Frame("RECEIPT", (("receipt-id", receipt_id),))


def error_frame(
    message: str,
    *,
    receipt_id: str | None = None,
    extra: Headers = (),
    body: bytes = b"",
    content_type: str = "text/plain",
) -> Frame:
    """An ERROR frame: ``message`` header, ``receipt-id`` if the culprit asked for a receipt,
    and a body of ``content_type`` if any."""
    headers: list[Header] = [("message", message)]
    if receipt_id is not None:
        headers.append(("receipt-id", receipt_id))
    headers.extend(extra)
    if body:
        headers.append(("content-type", content_type))
    return Frame("ERROR", tuple(headers), body)


def _encode(dialect: _Dialect, text: str, unsendable: str) -> str:
    if unsendable and any(c in text for c in unsendable):
        raise UsageError(f"{text!r} cannot be written in a STOMP {dialect.name} header")
    return text.translate(dialect.escapes) if dialect.escapes else text


def escape(text: str, version: str | None = LATEST_VERSION) -> str:
    """A header value as ``version`` writes it; ``UsageError`` if that version cannot."""
    dialect = _dialect(version)
    return _encode(dialect, text, dialect.unsendable_value)


def _decode(dialect: _Dialect, text: str) -> str:
    table = dialect.unescapes
    if table is None or "\\" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        replacement = table.get(match.group(1))
        if replacement is None:
            raise ProtocolError("undefined escape sequence in header")
        return replacement

    return _ESCAPE_SEQUENCE.sub(one, text)


def unescape(text: str, version: str | None = LATEST_VERSION) -> str:
    """Undo ``escape``; in 1.1 and 1.2 an undefined sequence (``\\t``, a trailing ``\\``,
    ``\\r`` in 1.1) is a ProtocolError. Without escaping (1.0) the text is returned as is."""
    return _decode(_dialect(version), text)


def decode_headers(command: str, headers: Headers, version: str | None) -> Headers:
    """Headers as read off the wire (split at the first colon, nothing undone) decoded the way
    ``version`` writes them for ``command``; ProtocolError on an undefined escape."""
    dialect = _dialect(version, command)
    if dialect.unescapes is None:
        return headers
    return tuple((_decode(dialect, name), _decode(dialect, value)) for name, value in headers)


def _header_lines(dialect: _Dialect, headers: Iterable[Header]) -> list[str]:
    lines: list[str] = []
    for name, value in headers:
        if not name:
            raise UsageError("header name must not be empty")
        name = _encode(dialect, name, dialect.unsendable_name)
        lines.append(f"{name}:{_encode(dialect, value, dialect.unsendable_value)}\n")
    return lines


def serialize(frame: Frame, version: str | None = LATEST_VERSION) -> bytes:
    """Encode ``frame`` for the wire, its headers written as ``version`` writes them.

    A ``content-length`` header is appended when the frame has none and either it is a server
    frame with a non-empty body or its body contains a NUL. A ``content-length`` already present
    must match the body. ``UsageError`` if a header cannot be written in ``version``.
    """
    command = frame.command
    if not command or any(c in command for c in "\r\n\0:"):
        raise UsageError(f"invalid command {command!r}")
    headers = list(frame.headers)
    declared = first_header(frame.headers, "content-length")
    body = frame.body
    if declared is not None:
        if declared != str(len(body)):
            raise UsageError("content-length header does not match the body")
    elif body and (command in SERVER_COMMANDS or b"\0" in body):
        headers.append(("content-length", str(len(body))))
    lines = _header_lines(_dialect(version, command), headers)
    head = command + "\n" + "".join(lines) + "\n"
    return b"".join((head.encode(), body, b"\0"))


class EncodedMessage:
    """The subscriber-independent tail of a MESSAGE frame: the extra header lines,
    ``content-length``, the blank line, the body and the closing NUL.

    The STOMP 1.2 tail is made at once; ``tail_for(version)`` makes another version's the
    first time a subscriber of that version needs it, and keeps the bytes. Versions that
    would write the same bytes share them: every version when no header holds a colon,
    backslash or line break, 1.1 and 1.2 when none holds a carriage return. The body is held
    only inside the tails.
    """

    __slots__ = ("_body_size", "_same_as", "_tails", "headers")

    def __init__(self, headers: Headers, body: bytes) -> None:
        for name, _ in headers:
            if not name:
                raise UsageError("header name must not be empty")
            if name in MESSAGE_RESERVED:
                raise UsageError(f"header {name!r} is set per subscriber by the connection")
        self.headers = headers
        self._body_size = len(body)
        special = _SPECIAL.intersection("".join(n + v for n, v in headers))
        # Versions that write these headers byte for byte alike share one serialization.
        self._same_as: dict[_Dialect, _Dialect] = {}
        if not special:
            self._same_as = {_V11: _RAW, _V12: _RAW}
        elif "\r" not in special:
            self._same_as = {_V11: _V12}
        first = self._same_as.get(_V12, _V12)
        self._tails = {first: self._make(first, body)}

    def _make(self, dialect: _Dialect, body: bytes) -> bytes:
        lines = _header_lines(dialect, self.headers)
        lines.append(f"content-length:{len(body)}\n\n")
        return b"".join(("".join(lines).encode(), body, b"\0"))

    @property
    def body_size(self) -> int:
        return self._body_size

    @property
    def body(self) -> bytes:
        tail = next(iter(self._tails.values()))
        return tail[len(tail) - self._body_size - 1 : -1]

    @property
    def tail(self) -> bytes:
        """The tail as STOMP 1.2 writes it."""
        return self.tail_for(LATEST_VERSION)

    def tail_for(self, version: str | None) -> bytes:
        """The tail as ``version`` writes it; ``UsageError`` if that version cannot carry one
        of the headers (a line break in a STOMP 1.0 value, a carriage return in 1.1)."""
        dialect = _dialect(version)
        dialect = self._same_as.get(dialect, dialect)
        tail = self._tails.get(dialect)
        if tail is None:
            tail = self._tails[dialect] = self._make(dialect, self.body)
        return tail


def encode_message(headers: Iterable[Header], body: bytes) -> EncodedMessage:
    """Prepare the shared part of a MESSAGE for fan-out to many subscribers."""
    return EncodedMessage(tuple(headers), body)


def message_bytes(
    encoded: EncodedMessage,
    *,
    destination: str,
    message_id: str,
    subscription_id: str,
    ack_id: str | None,
    version: str | None = LATEST_VERSION,
) -> bytes:
    """A complete MESSAGE frame for a subscriber speaking ``version``: its own header lines,
    then the shared tail."""
    tail = encoded.tail_for(version)
    dialect = _dialect(version)
    unsendable = dialect.unsendable_value

    def line(name: str, value: str) -> str:
        return f"{name}:{_encode(dialect, value, unsendable)}\n"

    head = (
        "MESSAGE\n"
        + line("destination", destination)
        + line("message-id", message_id)
        + line("subscription", subscription_id)
    )
    if ack_id is not None:
        head += line("ack", ack_id)
    return head.encode() + tail
