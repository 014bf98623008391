"""Who a user is: the normalised email that FlairBit puts in a token's ``sub``."""

from __future__ import annotations

from .errors import InvalidInput

MAX_EMAIL_LENGTH = 254


def normalise_email(value: str, *, field: str = "email") -> str:
    """Lower-case and trim an email; reject what cannot be one."""
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
