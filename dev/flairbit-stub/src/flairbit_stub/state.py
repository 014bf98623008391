"""The stand-in's in-memory world: users, profiles, injected faults and counters.

Pure: no I/O, no clock, no event loop. Every user exists implicitly (one per valid email, with
a profile for every configured intent) until a test control deletes the user or removes one
of its profiles. Emails are normalised (trimmed, lower-cased) before any rule applies; ids
derive from the normalised email, so the same person always gets the same ids.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from .errors import InvalidInput, ProfileNotFound, UserNotFound

MAX_EMAIL_LENGTH = 254
NO_USER_PREFIX = "nouser"
DEFAULT_FAULT_DELAY_MS = 2000
DEFAULT_FAULT_STATUS = 503

# Fixed so that ids survive restarts; any change would re-key every dev database.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:flairbit-stub:ids")

_NAME_SEPARATORS = re.compile(r"[._\-]+")


def normalise_email(value: str, *, field: str = "email") -> str:
    """Trim and lower-case ``value``; raise :class:`InvalidInput` when it is no address."""
    email = value.strip().lower()
    local, at, domain = email.partition("@")
    if (
        not at
        or not local
        or not domain
        or len(email) > MAX_EMAIL_LENGTH
        or any(ch.isspace() for ch in email)
    ):
        raise InvalidInput(f"{field} is not a valid email address", field=field)
    return email


def local_part(email: str) -> str:
    return email.partition("@")[0]


def default_display_name(email: str) -> str:
    """``alice.smith@x`` -> ``Alice Smith``: the local part's words, capitalised."""
    words = [word for word in _NAME_SEPARATORS.split(local_part(email)) if word]
    return " ".join(word.capitalize() for word in words) or local_part(email)


def user_id(email: str) -> uuid.UUID:
    return uuid.uuid5(ID_NAMESPACE, f"user:{email}")


def profile_id(email: str, intent: str) -> uuid.UUID:
    return uuid.uuid5(ID_NAMESPACE, f"profile:{intent}:{email}")


@dataclass(frozen=True, slots=True)
class Profile:
    id: uuid.UUID
    display_name: str
    user_email: str
    user_id: uuid.UUID


class FaultMode(Enum):
    OK = "ok"
    FAIL = "fail"
    SLOW = "slow"


@dataclass(frozen=True, slots=True)
class Faults:
    """How the profile look-up misbehaves: ``fail`` answers ``status``, ``slow`` waits."""

    mode: FaultMode = FaultMode.OK
    delay_ms: int = DEFAULT_FAULT_DELAY_MS
    status: int = DEFAULT_FAULT_STATUS


class World:
    """Users, profiles, faults and counters of one running stand-in.

    Methods take normalised emails (see :func:`normalise_email`).
    """

    def __init__(self, intents: Iterable[str]) -> None:
        self._intents = frozenset(intents)
        self._deleted_users: set[str] = set()
        self._removed_profiles: set[tuple[str, str]] = set()
        self._display_names: dict[tuple[str, str], str] = {}
        self.faults = Faults()
        self.profile_lookups = 0

    @property
    def intents(self) -> frozenset[str]:
        return self._intents

    def _require_user(self, email: str) -> None:
        if local_part(email).startswith(NO_USER_PREFIX):
            raise UserNotFound(f"no user has the address {email} (a {NO_USER_PREFIX} address)")
        if email in self._deleted_users:
            raise UserNotFound(f"the user {email} was deleted")

    def _require_intent(self, intent: str) -> None:
        if intent not in self._intents:
            raise ProfileNotFound(f"{intent!r} is not an intent FlairBit knows")

    def profile(self, email: str, intent: str) -> Profile:
        self._require_user(email)
        self._require_intent(intent)
        if (email, intent) in self._removed_profiles:
            raise ProfileNotFound(f"the user {email} has no {intent} profile")
        return Profile(
            id=profile_id(email, intent),
            display_name=self._display_names.get((email, intent)) or default_display_name(email),
            user_email=email,
            user_id=user_id(email),
        )

    def record_profile_lookup(self) -> None:
        self.profile_lookups += 1

    def delete_user(self, email: str) -> None:
        self._deleted_users.add(email)

    def remove_profile(self, email: str, intent: str) -> None:
        self._require_intent(intent)
        self._removed_profiles.add((email, intent))

    def put_profile(self, email: str, intent: str, display_name: str) -> Profile:
        """Set the display name, bringing back the user and this profile if they were gone."""
        if local_part(email).startswith(NO_USER_PREFIX):
            raise UserNotFound(f"{NO_USER_PREFIX} addresses never have a user")
        self._require_intent(intent)
        name = display_name.strip()
        if not name:
            raise InvalidInput("displayName must not be blank", field="displayName")
        self._deleted_users.discard(email)
        self._removed_profiles.discard((email, intent))
        self._display_names[(email, intent)] = name
        return self.profile(email, intent)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults

    def reset(self) -> None:
        self._deleted_users.clear()
        self._removed_profiles.clear()
        self._display_names.clear()
        self.faults = Faults()
        self.profile_lookups = 0
