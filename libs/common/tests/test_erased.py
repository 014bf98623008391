"""The rule of a deleted user's tokens (pure): which ``iat`` an erasure revokes, how long the
denial lives, and its key (no email in it, not the user key)."""

from __future__ import annotations

import math

import pytest

from chat_common import routing
from chat_common.erased import DENIAL_PREFIX, UserDeleted, denial_key, denial_ttl, revoked
from chat_common.errors import AuthenticationFailed
from chat_common.problems import status_for

ERASED = 1_700_000_000.25


@pytest.mark.parametrize(
    ("issued_at", "refused"),
    [
        (ERASED - 3600, True),  # an hour before
        (ERASED - 1, True),
        (math.floor(ERASED), True),  # iat of the erasure's own second
        (None, True),  # no iat: cannot show it is newer
        (math.floor(ERASED) + 1, False),  # issued after the erasure
        (ERASED + 3600, False),
    ],
)
def test_tokens_issued_up_to_the_erasures_second_are_revoked(
    issued_at: float | None, refused: bool
) -> None:
    assert revoked(issued_at, ERASED) is refused


def test_an_unreadable_erasure_time_revokes_every_token() -> None:
    assert revoked(ERASED + 10**6, math.inf)


@pytest.mark.parametrize(
    ("lifetime", "leeway", "ttl"),
    [(3600, 30, 3630), (3600, 0, 3600), (59.2, 0.5, 60), (0, 0, 1), (60, -5, 60)],
)
def test_a_denial_lives_as_long_as_a_token_issued_before_it(
    lifetime: float, leeway: float, ttl: int
) -> None:
    assert denial_ttl(lifetime, leeway) == ttl


def test_the_denial_key_holds_neither_the_email_nor_the_user_key() -> None:
    email = "alice@example.com"
    key = denial_key(email)
    assert key.startswith(DENIAL_PREFIX)
    assert email not in key
    assert "alice" not in key
    assert routing.user_key(email).split(".", 1)[1] not in key
    assert key == denial_key(email) != denial_key("bob@example.com")
    assert denial_key(email, "p:").startswith("p:")


def test_the_refusal_is_an_authentication_failure_with_its_own_code() -> None:
    error = UserDeleted("gone")
    assert isinstance(error, AuthenticationFailed)
    assert error.code == "USER_DELETED"
    assert status_for(error) == 401
