"""A session's participant rows read as rules (pure): who is the caller and who the peer,
and whether the session is blocked or closed."""

from __future__ import annotations

from chat_common.errors import Forbidden, NotFound

from .repository import Member


def caller_and_peer(members: list[Member], user_email: str) -> tuple[Member, Member]:
    """(caller, peer); 404 unknown session, 403 not a participant."""
    if not members:
        raise NotFound("no such session", code="SESSION_NOT_FOUND")
    mine = [m for m in members if m.user_email == user_email]
    if not mine:
        raise Forbidden("you are not a participant of this session", code="NOT_PARTICIPANT")
    peers = [m for m in members if m.user_email != user_email]
    return mine[0], peers[0]


def any_blocked(members: list[Member]) -> bool:
    return any(m.blocked_at is not None for m in members)


def closed_reason(members: list[Member]) -> str | None:
    return next((m.closed_reason for m in members if m.closed_reason is not None), None)
