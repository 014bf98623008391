"""Typed settings read once from environment variables.

A service declares a ``msgspec.Struct`` whose field names, upper-cased, are the variable names
(optionally behind a prefix), then calls :func:`load`. Values are converted from strings by
msgspec (ints, floats, bools); tuple fields take comma-separated lists; :class:`Secret` fields
never show their value in ``repr`` or logs.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec


class SettingsError(Exception):
    """An environment variable is missing or has the wrong shape."""


class Secret:
    """A string that must not leak into logs or reprs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


T = TypeVar("T", bound=msgspec.Struct)


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Secret and isinstance(obj, str):
        return Secret(obj)
    raise NotImplementedError(f"cannot read {type_!r} from the environment")


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (tuple, list, frozenset, set):
        return True
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_is_sequence(a) for a in typing.get_args(annotation) if a is not type(None))
    return False


def load(cls: type[T], *, prefix: str = "", environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from the environment; raise :class:`SettingsError` naming the variable."""
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    raw: dict[str, Any] = {}
    for field in msgspec.structs.fields(cls):
        name = f"{prefix}{field.name}".upper()
        if name not in env:
            continue
        value: Any = env[name]
        if _is_sequence(hints[field.name]):
            value = [part.strip() for part in value.split(",") if part.strip()]
        raw[field.name] = value
    try:
        return msgspec.convert(raw, cls, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise SettingsError(
            f"invalid settings for {cls.__name__} (prefix {prefix!r}): {exc}"
        ) from exc
