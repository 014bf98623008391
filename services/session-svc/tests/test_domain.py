"""Canonical ordering of a pair of profiles, blocks, and the erasure's placeholders and Redis
patterns (pure)."""

from __future__ import annotations

import uuid

import pytest

from chat_common import routing
from chat_common.errors import Forbidden, InvalidInput
from session_svc.domain import (
    Profile,
    blocks_after,
    cache_patterns,
    canonical_pair,
    glob_escape,
    is_placeholder,
    placeholder,
)


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


def test_a_block_is_the_blockers_own_and_idempotent() -> None:
    a, b = "a@example.com", "b@example.com"
    assert blocks_after(a, (), "block") == (a,)
    assert blocks_after(a, (a,), "block") is None  # again: nothing changes
    assert blocks_after(b, (a,), "block") == (a, b)  # both may block
    assert blocks_after(a, (a, b), "unblock") == (b,)  # each lifts only their own
    assert blocks_after(a, (), "unblock") is None  # nothing to lift
    with pytest.raises(Forbidden) as refused:
        blocks_after(b, (a,), "unblock")
    assert refused.value.code == "NOT_BLOCKER"


def test_placeholders_are_random_unlinkable_and_never_an_address() -> None:
    token = uuid.UUID("00000000-0000-4000-8000-000000000001")
    p = placeholder(token)
    assert p.email == f"deleted-{token.hex}@erased.invalid"
    assert (p.profile_id, p.display_name) == (token, "Deleted user")
    assert is_placeholder(p.email)
    assert not is_placeholder("alice@example.com")
    assert placeholder(uuid.uuid4()).email != placeholder(uuid.uuid4()).email


def test_cache_patterns_match_the_email_and_the_user_key_literally() -> None:
    assert glob_escape("a*b?c[d]e\\f@x.io") == "a\\*b\\?c\\[d\\]e\\\\f@x.io"
    email = "o*ne@example.com"
    key = routing.user_key(email)
    assert cache_patterns(email, key) == ("*o\\*ne@example.com*", f"*{key.split('.')[1]}*")
