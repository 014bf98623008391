"""Presence as session-svc answers it: a user's peers (who shares a session with them), for
the edges, and the presence of peers, for ``GET /api/chat/presence``. Strangers are refused:
nobody learns whether someone they have no session with is online."""

from __future__ import annotations

import asyncpg

from chat_common.errors import DependencyUnavailable, Forbidden, InvalidInput
from chat_common.identity import normalise_email
from chat_common.presence import MAX_PEERS, PresenceAnswer
from chat_common.presence_store import PresenceStore

from . import repository

MAX_ASKED = 100  # emails per presence request


def asked_emails(values: list[str]) -> list[str]:
    """The emails of ``?emails=a,b&emails=c``: normalised, de-duplicated, in order (pure)."""
    emails: dict[str, None] = {}
    for value in values:
        for part in value.split(","):
            if part.strip():
                emails[normalise_email(part, field="emails")] = None
    if not emails:
        raise InvalidInput("emails: name at least one user", field="emails")
    if len(emails) > MAX_ASKED:
        raise InvalidInput(f"emails: at most {MAX_ASKED} users per request", field="emails")
    return list(emails)


class PresenceService:
    def __init__(self, pool: asyncpg.Pool, store: PresenceStore | None) -> None:
        self._pool = pool
        self._store = store

    async def peers(self, user_email: str) -> list[str]:
        async with self._pool.acquire() as conn:
            return await repository.peers_of(conn, user_email, MAX_PEERS)

    async def presence(self, user_email: str, emails: list[str]) -> PresenceAnswer:
        others = [e for e in emails if e != user_email]
        async with self._pool.acquire() as conn:
            peers = await repository.peers_among(conn, user_email, others) if others else set()
        if len(peers) < len(others):
            raise Forbidden(
                "presence is shown only for users you share a session with", code="NOT_A_PEER"
            )
        if self._store is None:
            raise DependencyUnavailable(
                "presence is not kept here (no REDIS_URL)", code="PRESENCE_UNAVAILABLE"
            )
        return PresenceAnswer(await self._store.read(emails))
