"""Pure rules of sessions: who may chat with whom, and the canonical order of a pair."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from chat_common.errors import InvalidInput


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
