"""Request and response bodies, as msgspec Structs (camelCase on the wire)."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from .state import MAX_EMAIL_LENGTH, FaultMode

# Ten years either way is more than any test needs and keeps claim arithmetic in range.
_TEN_YEARS = 10 * 366 * 86400
Seconds = Annotated[int, msgspec.Meta(ge=-_TEN_YEARS, le=_TEN_YEARS)]


class TokenRequest(msgspec.Struct, rename="camel", frozen=True):
    # The length bound here only spares the parser; the email rules live in state.py.
    email: Annotated[str, msgspec.Meta(max_length=4 * MAX_EMAIL_LENGTH)]
    ttl_seconds: Seconds | None = None
    not_before_offset: Seconds = 0


class TokenResponse(msgspec.Struct, frozen=True):
    token: str


class ProfileBody(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    display_name: str
    user_email: str
    user_id: uuid.UUID


class DisplayNameRequest(msgspec.Struct, rename="camel", frozen=True):
    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class FaultsBody(msgspec.Struct, rename="camel", frozen=True):
    mode: FaultMode
    delay_ms: Annotated[int, msgspec.Meta(ge=0, le=120_000)] | None = None
    status: Annotated[int, msgspec.Meta(ge=400, le=599)] | None = None


class StatsBody(msgspec.Struct, rename="camel", frozen=True):
    profile_lookups: int


class StatusBody(msgspec.Struct, frozen=True):
    status: str


class Problem(msgspec.Struct, omit_defaults=True, frozen=True):
    """RFC 9457 problem details, with ``code`` (and ``field`` for bad input) as extensions."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None
