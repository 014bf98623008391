"""Errors of the FlairBit stand-in.

The tree (no HTTP status here: ``app.py`` maps classes to statuses)::

    StubError
    ├── SettingsError           an environment variable the stub cannot use
    ├── KeyFileError            a key file that exists but cannot be loaded
    ├── MalformedBody           a body that is not JSON (or is missing)
    │   └── BodyTooLarge        a body over the size the stub reads
    ├── InvalidInput            well-formed JSON of the wrong shape, or a value breaking a rule
    ├── Unauthenticated         a missing or untrusted service token
    └── NotFound
        ├── UserNotFound        no such user (deleted, or a ``nouser...`` address)
        └── ProfileNotFound     the user has no profile for the intent
"""

from __future__ import annotations


class StubError(Exception):
    """Base of every error the stand-in raises on purpose."""

    code: str = "STUB_ERROR"
    title: str = "FlairBit stub error"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class SettingsError(StubError):
    code = "BAD_SETTINGS"
    title = "Unusable settings"


class KeyFileError(StubError):
    code = "BAD_KEY_FILE"
    title = "Unusable key file"


class MalformedBody(StubError):
    code = "MALFORMED_BODY"
    title = "Malformed request body"


class BodyTooLarge(MalformedBody):
    code = "BODY_TOO_LARGE"
    title = "Request body too large"


class InvalidInput(StubError):
    code = "INVALID_INPUT"
    title = "Invalid input"


class Unauthenticated(StubError):
    code = "UNAUTHENTICATED"
    title = "Authentication failed"


class NotFound(StubError):
    code = "NOT_FOUND"
    title = "Not found"


class UserNotFound(NotFound):
    code = "USER_NOT_FOUND"
    title = "User not found"


class ProfileNotFound(NotFound):
    code = "PROFILE_NOT_FOUND"
    title = "Profile not found"
