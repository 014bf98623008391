"""Canonical ordering of a pair of profiles (pure)."""

from __future__ import annotations

import uuid

import pytest

from chat_common.errors import InvalidInput
from session_svc.domain import Profile, canonical_pair


def profile(email: str, pid: str) -> Profile:
    return Profile(uuid.UUID(pid), email.split("@")[0], email, "u")


A = profile("alice@example.com", "00000000-0000-0000-0000-00000000000a")
B = profile("bob@example.com", "00000000-0000-0000-0000-00000000000b")


def test_order_does_not_depend_on_who_asks() -> None:
    assert canonical_pair(A, B) == canonical_pair(B, A)
    pair = canonical_pair(B, A)
    assert pair.low.id < pair.high.id
    assert (pair.low, pair.high) == (A, B)


@pytest.mark.parametrize(
    "other",
    [A, profile("alice@example.com", "00000000-0000-0000-0000-0000000000ff")],
)
def test_self_chat_is_refused(other: Profile) -> None:
    with pytest.raises(InvalidInput) as caught:
        canonical_pair(A, other)
    assert caught.value.code == "SELF_CHAT"
