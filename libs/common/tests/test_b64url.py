"""Base64url without padding, one spelling per value."""

from __future__ import annotations

import pytest

from chat_common import b64url


@pytest.mark.parametrize("raw", [b"", b"\x00", b"\xfb\xff", b"abc", bytes(range(256))])
def test_round_trip(raw: bytes) -> None:
    text = b64url.encode(raw)
    assert "=" not in text
    assert b64url.decode(text) == raw


@pytest.mark.parametrize(
    "text",
    [
        "+_8",  # "+": base64's alphabet, not base64url's
        "-_8/",  # "/": the same
        "YQ==",  # padded
        "Y Q",  # a character outside the alphabet, skipped by a lenient decoder
        "YWJjZ",  # a length no bytes have
        "YR",  # stray bits in the last character: "YQ" spells the same byte
        "é",
    ],
)
def test_anything_but_the_one_spelling_is_refused(text: str) -> None:
    assert b64url.decode(text) is None
