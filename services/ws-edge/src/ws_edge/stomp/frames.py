"""STOMP frames: the value type, header escaping and serialization.

A frame on the wire is a command line, header lines, a blank line, the body and a NUL octet.
Header names and values are UTF-8; in every frame but CONNECT and CONNECTED (kept raw for
STOMP 1.0 compatibility) carriage return, line feed, colon and backslash are escaped as
``\\r``, ``\\n``, ``\\c`` and ``\\\\``. Any other backslash sequence is a protocol error.

``encode_message`` serializes the part of a MESSAGE frame that is shared by every subscriber
(extra headers, content-length, body) once, so fan-out only writes the few per-subscriber
header lines in front of it.
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
"""Commands whose headers are never escaped."""

HEARTBEAT: bytes = b"\n"
"""What a heart-beat looks like on the wire: one end-of-line."""

# Headers the connection writes itself on every MESSAGE; callers may not supply them.
MESSAGE_RESERVED: frozenset[str] = frozenset(
    {"destination", "message-id", "subscription", "ack", "content-length"}
)

_ESCAPES = str.maketrans({"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"})
_UNESCAPES = {"\\": "\\", "r": "\r", "n": "\n", "c": ":"}
_ESCAPE_SEQUENCE = re.compile(r"\\(.?)", re.DOTALL)


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
    message: str, *, receipt_id: str | None = None, extra: Headers = (), body: bytes = b""
) -> Frame:
    """An ERROR frame: ``message`` header, ``receipt-id`` if the culprit asked for a receipt."""
    headers: list[Header] = [("message", message)]
    if receipt_id is not None:
        headers.append(("receipt-id", receipt_id))
    headers.extend(extra)
    if body:
        headers.append(("content-type", "text/plain"))
    return Frame("ERROR", tuple(headers), body)


def escape(text: str) -> str:
    """Escape a header name or value for a frame that uses STOMP 1.2 escaping."""
    return text.translate(_ESCAPES)


def _unescape_one(match: re.Match[str]) -> str:
    replacement = _UNESCAPES.get(match.group(1))
    if replacement is None:
        raise ProtocolError("undefined escape sequence in header")
    return replacement


def unescape(text: str) -> str:
    """Undo ``escape``; an undefined sequence (``\\t``, a trailing ``\\``) is a ProtocolError."""
    if "\\" not in text:
        return text
    return _ESCAPE_SEQUENCE.sub(_unescape_one, text)


def _check_raw(name: str, value: str) -> None:
    if any(c in name for c in "\r\n:") or not name or any(c in value for c in "\r\n"):
        raise UsageError(f"header {name!r} cannot be sent unescaped")


def _header_lines(command: str, headers: Iterable[Header]) -> list[str]:
    lines: list[str] = []
    if command in RAW_HEADER_COMMANDS:
        for name, value in headers:
            _check_raw(name, value)
            lines.append(f"{name}:{value}\n")
    else:
        for name, value in headers:
            if not name:
                raise UsageError("header name must not be empty")
            lines.append(f"{escape(name)}:{escape(value)}\n")
    return lines


def serialize(frame: Frame) -> bytes:
    """Encode ``frame`` for the wire.

    A ``content-length`` header is appended when the frame has none and either it is a server
    frame with a non-empty body or its body contains a NUL. A ``content-length`` already present
    must match the body.
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
    head = command + "\n" + "".join(_header_lines(command, headers)) + "\n"
    return b"".join((head.encode(), body, b"\0"))


@dataclass(frozen=True, slots=True)
class EncodedMessage:
    """The subscriber-independent tail of a MESSAGE frame, serialized once.

    ``tail`` holds the extra header lines, ``content-length``, the blank line, the body and
    the closing NUL.
    """

    tail: bytes
    body_size: int


def encode_message(headers: Iterable[Header], body: bytes) -> EncodedMessage:
    """Pre-encode the shared part of a MESSAGE for fan-out to many subscribers."""
    headers = tuple(headers)
    for name, _ in headers:
        if name in MESSAGE_RESERVED:
            raise UsageError(f"header {name!r} is set per subscriber by the connection")
    lines = _header_lines("MESSAGE", headers)
    lines.append(f"content-length:{len(body)}\n\n")
    return EncodedMessage(b"".join(("".join(lines).encode(), body, b"\0")), len(body))


def message_bytes(
    encoded: EncodedMessage,
    *,
    destination: str,
    message_id: str,
    subscription_id: str,
    ack_id: str | None,
) -> bytes:
    """A complete MESSAGE frame: the per-subscriber header lines, then the shared tail."""
    head = (
        f"MESSAGE\ndestination:{escape(destination)}\nmessage-id:{escape(message_id)}\n"
        f"subscription:{escape(subscription_id)}\n"
    )
    if ack_id is not None:
        head += f"ack:{escape(ack_id)}\n"
    return head.encode() + encoded.tail
