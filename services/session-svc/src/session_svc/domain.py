"""Pure rules of sessions: who may chat with whom, the canonical order of a pair, and what a
block or an unblock does."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from chat_common.errors import Forbidden, InvalidInput


@dataclass(frozen=True, slots=True)
class Profile:
    """A user's profile for one intent, as FlairBit describes it."""

    id: uuid.UUID
    display_name: str
    user_email: str
    user_id: str


@dataclass(frozen=True, slots=True)
class Pair:
    """Two distinct profiles in canonical order: ``low.id < high.id``."""

    low: Profile
    high: Profile


def canonical_pair(a: Profile, b: Profile) -> Pair:
    """Order two profiles so that the same two people always give the same pair."""
    if a.user_email == b.user_email or a.id == b.id:
        raise InvalidInput(
            "you cannot open a chat with yourself", code="SELF_CHAT", field="toEmail"
        )
    return Pair(a, b) if a.id < b.id else Pair(b, a)


BlockChange = Literal["block", "unblock"]


def blocks_after(user: str, blockers: Iterable[str], change: BlockChange) -> tuple[str, ...] | None:
    """The participants who block a session after ``user`` (a participant) asks for
    ``change``, in order; None when the request changes nothing (idempotent: blocking again,
    or unblocking a session nobody blocks). Only the one who blocked lifts that block: an
    unblock by the other participant of a session only they block is refused
    (``NOT_BLOCKER``); each participant's block is their own, so a session both block stays
    blocked until both lift theirs."""
    current = tuple(dict.fromkeys(blockers))
    if change == "block":
        return None if user in current else (*current, user)
    if user in current:
        return tuple(b for b in current if b != user)
    if current:
        raise Forbidden(
            "only the participant who blocked this session can unblock it", code="NOT_BLOCKER"
        )
    return None


# -- erasure of a deleted user ----------------------------------------------------------------

ERASED_DISPLAY_NAME = "Deleted user"
ERASED_DOMAIN = "erased.invalid"
"""Placeholders live under a reserved domain (RFC 2606: ``.invalid`` never resolves), so no
FlairBit account, and so no token, can ever carry one."""


@dataclass(frozen=True, slots=True)
class Placeholder:
    """Who an erased participant of one session becomes: drawn at random for each session
    (never derived from the email, which would keep it linkable), so that neither the tables
    nor the peers of different sessions can tell the same person was there."""

    email: str
    profile_id: uuid.UUID
    display_name: str = ERASED_DISPLAY_NAME


def placeholder(token: uuid.UUID) -> Placeholder:
    """The placeholder made of a random ``token`` (``uuid.uuid4()``: the caller draws it)."""
    return Placeholder(f"deleted-{token.hex}@{ERASED_DOMAIN}", token)


def is_placeholder(email: str) -> bool:
    return email.endswith(f"@{ERASED_DOMAIN}")


_GLOB_SPECIAL = frozenset("*?[]\\")


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis ``SCAN ... MATCH`` pattern."""
    return "".join(f"\\{c}" if c in _GLOB_SPECIAL else c for c in text)


def cache_patterns(email: str, user_key: str) -> tuple[str, ...]:
    """The Redis key patterns of what is kept of a user: keys named by the email (rate limits
    of the sends) or by its user key (presence, last seen, seats, key-change limits)."""
    digest = user_key.split(".", 1)[-1]
    return (f"*{glob_escape(email)}*", f"*{glob_escape(digest)}*")
