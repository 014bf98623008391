"""Settings from the environment: conversion, lists, secrets, clear errors."""

from __future__ import annotations

import msgspec
import pytest

from chat_common.settings import Secret, SettingsError, load


class Example(msgspec.Struct, kw_only=True, frozen=True):
    port: int = 8000
    ratio: float = 0.5
    debug: bool = False
    origins: tuple[str, ...] = ()
    password: Secret | None = None
    name: str


def test_converts_from_strings() -> None:
    loaded = load(
        Example,
        environ={
            "PORT": "9000",
            "RATIO": "1.5",
            "DEBUG": "true",
            "ORIGINS": "http://a, http://b,",
            "PASSWORD": "hunter2",
            "NAME": "x",
        },
    )
    assert loaded.port == 9000
    assert loaded.ratio == 1.5
    assert loaded.debug is True
    assert loaded.origins == ("http://a", "http://b")
    assert loaded.password is not None
    assert loaded.password.get() == "hunter2"
    assert "hunter2" not in repr(loaded)


def test_prefix_and_defaults() -> None:
    loaded = load(Example, prefix="APP_", environ={"APP_NAME": "y", "NAME": "ignored"})
    assert (loaded.name, loaded.port) == ("y", 8000)


@pytest.mark.parametrize("environ", [{"NAME": "x", "PORT": "eighty"}, {}])
def test_bad_or_missing_value_names_the_problem(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="Example"):
        load(Example, environ=environ)
