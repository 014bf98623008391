"""Use cases of session-svc: open (get-or-create) a session, check membership."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from chat_common.dto import (
    CLOSED,
    OPEN,
    InitSessionRequest,
    Membership,
    Participant,
    SessionView,
)
from chat_common.errors import Forbidden, InvalidInput, NotFound
from chat_common.identity import normalise_email

from . import repository
from .domain import Profile, canonical_pair
from .flairbit import ProfileDirectory


def _participant(row: repository.ParticipantRow) -> Participant:
    return Participant(
        profile_id=row.profile_id, display_name=row.display_name, email=row.user_email
    )


def _view(row: repository.SessionRow) -> SessionView:
    a, b = row.participants
    return SessionView(
        session_id=row.id,
        intent=row.intent,
        participants=(_participant(a), _participant(b)),
        created_at=row.created_at,
        blocked_by=row.blocked_by,
        state=_state(row),
        closed_reason=row.closed_reason,
    )


def _state(row: repository.SessionRow) -> str:
    return OPEN if row.closed_reason is None else CLOSED


class SessionService:
    def __init__(self, pool: asyncpg.Pool, profiles: ProfileDirectory) -> None:
        self._pool = pool
        self._profiles = profiles

    async def open_session(self, user_email: str, request: InitSessionRequest) -> SessionView:
        """Get or create the session between the caller and ``toEmail`` for ``intent``."""
        if request.from_email is not None and (
            normalise_email(request.from_email, field="fromEmail") != user_email
        ):
            raise InvalidInput(
                "fromEmail must be the signed-in user (or be left out)",
                code="FROM_EMAIL_MISMATCH",
                field="fromEmail",
            )
        peer_email = normalise_email(request.to_email, field="toEmail")
        return await self.open_between(user_email, peer_email, request.intent, peer_hidden=True)

    async def open_between(
        self, user_email: str, peer_email: str, intent: str, *, peer_hidden: bool = False
    ) -> SessionView:
        """Get or create the session of two users for ``intent`` (emails normalised).

        ``peer_hidden`` (a user asking): whether the peer has no account at all or no profile
        for ``intent`` is one answer, ``PEER_NOT_FOUND``, naming neither the address nor the
        intent, so that the endpoint cannot be used to learn who uses the app for what."""
        if peer_email == user_email:
            raise InvalidInput(
                "you cannot open a chat with yourself", code="SELF_CHAT", field="toEmail"
            )
        mine, theirs = await asyncio.gather(
            self._profiles.profile(user_email, intent),
            self._profile_of_peer(peer_email, intent, hidden=peer_hidden),
            return_exceptions=True,
        )
        if isinstance(mine, BaseException):  # the caller's own problem first
            raise mine
        if isinstance(theirs, BaseException):
            raise theirs
        pair = canonical_pair(mine, theirs)
        async with self._pool.acquire() as conn, conn.transaction():
            await repository.insert_session_if_absent(conn, uuid.uuid4(), pair, intent)
            row = await repository.find_by_pair(conn, pair, intent)
            if row is not None:
                changed = [
                    await repository.refresh_participant(conn, row.id, profile)
                    for profile in (pair.low, pair.high)
                ]
                if any(changed):
                    row = await repository.find_by_pair(conn, pair, intent)
        if row is None:  # only if the session was deleted between the two statements
            raise NotFound("the session disappeared while opening it; try again")
        return _view(row)

    async def _profile_of_peer(self, email: str, intent: str, *, hidden: bool) -> Profile:
        try:
            return await self._profiles.profile(email, intent)
        except NotFound:
            if not hidden:
                raise
            raise NotFound(
                "nobody to chat with at that address for this intent", code="PEER_NOT_FOUND"
            ) from None

    async def membership(self, user_email: str, session_id: uuid.UUID) -> Membership:
        """The caller's place in a session: 404 unknown session, 403 not a participant."""
        async with self._pool.acquire() as conn:
            row = await repository.find_by_id(conn, session_id)
        if row is None:
            raise NotFound("no such session", code="SESSION_NOT_FOUND")
        a, b = row.participants
        if user_email == a.user_email:
            me, peer = a, b
        elif user_email == b.user_email:
            me, peer = b, a
        else:
            raise Forbidden("you are not a participant of this session", code="NOT_PARTICIPANT")
        return Membership(
            session_id=row.id,
            intent=row.intent,
            me=_participant(me),
            peer=_participant(peer),
            blocked_by=row.blocked_by,
            state=_state(row),
            closed_reason=row.closed_reason,
        )
