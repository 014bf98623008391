"""Base64url without padding (RFC 4648 §5), the spelling of the binary fields in public keys
and encrypted envelopes (pure). Each value has one spelling: :func:`decode` refuses padding,
characters outside the alphabet, an impossible length and stray bits in the last character."""

from __future__ import annotations

import base64
import binascii


def encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(text: str) -> bytes | None:
    """The bytes ``text`` spells, or None when it is not their one base64url spelling."""
    if len(text) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if encode(raw) == text else None
