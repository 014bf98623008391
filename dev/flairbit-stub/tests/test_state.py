from __future__ import annotations

import pytest

from flairbit_stub.errors import InvalidInput, ProfileNotFound, UserNotFound
from flairbit_stub.state import (
    FaultMode,
    Faults,
    World,
    default_display_name,
    normalise_email,
    profile_id,
    user_id,
)

INTENTS = ("dating", "freelance", "rideshare")


def test_normalise_email_trims_and_lowercases() -> None:
    assert normalise_email("  Alice.Smith@Example.COM \n") == "alice.smith@example.com"


@pytest.mark.parametrize(
    "value",
    ["alice", "", "@example.com", "alice@", "al ice@example.com", "a@" + "x" * 253],
)
def test_normalise_email_refuses_non_addresses(value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalise_email(value)
    assert caught.value.field == "email"


@pytest.mark.parametrize(
    ("email", "name"),
    [
        ("alice.smith@x", "Alice Smith"),
        ("bob_o-neil@x", "Bob O Neil"),
        ("carol@x", "Carol"),
        ("..dave..@x", "Dave"),
        ("---@x", "---"),
    ],
)
def test_default_display_name(email: str, name: str) -> None:
    assert default_display_name(email) == name


def test_ids_are_stable_and_distinct() -> None:
    assert user_id("a@x") == user_id("a@x")
    assert profile_id("a@x", "dating") == profile_id("a@x", "dating")
    assert profile_id("a@x", "dating") != profile_id("a@x", "freelance")
    assert profile_id("a@x", "dating") != profile_id("b@x", "dating")
    assert user_id("a@x") != profile_id("a@x", "dating")


def test_every_valid_user_has_every_profile() -> None:
    world = World(INTENTS)
    profile = world.profile("alice.smith@x.org", "freelance")
    assert profile.display_name == "Alice Smith"
    assert profile.user_email == "alice.smith@x.org"
    assert profile.user_id == user_id("alice.smith@x.org")
    assert profile.id == profile_id("alice.smith@x.org", "freelance")


def test_unknown_intent_is_a_missing_profile() -> None:
    with pytest.raises(ProfileNotFound):
        World(INTENTS).profile("a@x", "chess")


def test_nouser_addresses_never_exist() -> None:
    world = World(INTENTS)
    with pytest.raises(UserNotFound):
        world.profile("nouser-42@x", "dating")
    with pytest.raises(UserNotFound):
        world.put_profile("nouser@x", "dating", "Ghost")


def test_deleted_user_and_removed_profile() -> None:
    world = World(INTENTS)
    world.remove_profile("a@x", "dating")
    with pytest.raises(ProfileNotFound):
        world.profile("a@x", "dating")
    assert world.profile("a@x", "rideshare").user_email == "a@x"
    world.delete_user("a@x")
    with pytest.raises(UserNotFound):
        world.profile("a@x", "rideshare")


def test_put_profile_restores_user_and_that_profile_only() -> None:
    world = World(INTENTS)
    world.remove_profile("a@x", "dating")
    world.remove_profile("a@x", "freelance")
    world.delete_user("a@x")
    profile = world.put_profile("a@x", "dating", "  Ann  ")
    assert profile.display_name == "Ann"
    assert world.profile("a@x", "dating").display_name == "Ann"
    assert world.profile("a@x", "rideshare").display_name == "A"
    with pytest.raises(ProfileNotFound):
        world.profile("a@x", "freelance")


def test_put_profile_refuses_blank_name_and_unknown_intent() -> None:
    world = World(INTENTS)
    with pytest.raises(InvalidInput):
        world.put_profile("a@x", "dating", "   ")
    with pytest.raises(ProfileNotFound):
        world.put_profile("a@x", "chess", "Ann")


def test_reset_forgets_everything() -> None:
    world = World(INTENTS)
    world.delete_user("a@x")
    world.remove_profile("b@x", "dating")
    world.put_profile("c@x", "dating", "Cee")
    world.set_faults(Faults(mode=FaultMode.FAIL, status=500))
    world.record_profile_lookup()
    world.reset()
    assert world.profile("a@x", "dating").display_name == "A"
    assert world.profile("b@x", "dating").display_name == "B"
    assert world.profile("c@x", "dating").display_name == "C"
    assert world.faults == Faults()
    assert world.profile_lookups == 0
