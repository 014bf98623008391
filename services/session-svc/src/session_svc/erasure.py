"""Use case of erasure: FlairBit deleted a user, and chat erases what it holds of them.

One transaction, under the row locks of the user's sessions (taken in id order, as sends take
them): in each session the user becomes a placeholder drawn at random
(:func:`session_svc.domain.placeholder`), their messages tombstones, the text and envelopes of
their edits erased, their email replaced in the peer's envelopes; the session is closed
(``PARTICIPANT_DELETED``); the user's public keys go, and so do the unpublished and dead outbox
rows of their sessions or naming them. The same transaction queues a ``closed`` event per
session newly closed for a peer who is still there (session key, the peer's user key in
``CC``), a ``user-deleted`` event to the user's own connections (their user key: every edge
closes them), wakes the relays and notifies ``chat_session_changed`` per session.

Before the transaction, the user's tokens issued until now are denied
(:class:`chat_common.erased.ErasedUsers`): refused from then on for the rest of their
lifetime. Written first, so that an edge that registers a connection of the user and finds no
denial has bound the user's key before the ``user-deleted`` event can be published: that event
closes it. If Redis fails there, the erasure goes on and the denial is written again after the
commit (still failing: 503), followed by a second ``user-deleted`` event for a connection
opened in between.

After the commit: every session-svc instance forgets the user's profile
(:class:`session_svc.invalidation.Invalidations`), the peers' stored presence stops listing
the user, and Redis forgets the user (:func:`session_svc.forget.forget_user`). A failure there
is answered 503: FlairBit calls again, which finds nothing left in PostgreSQL and retries
Redis. A user chat never knew, or erased before, is answered with zero counts.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid

import asyncpg
import msgspec
from redis.asyncio import Redis

from chat_common import routing, tracing
from chat_common.dto import (
    CLOSED,
    PARTICIPANT_DELETED,
    USER_DELETED,
    ErasureReport,
    SessionClosedEvent,
    UserDeletedEvent,
)
from chat_common.erased import ErasedUsers
from chat_common.errors import RedisUnavailable
from chat_common.outbox import OutboxEntry, add_outbox, notify, notify_session_changed
from chat_common.presence_store import RedisPresence

from . import repository
from .domain import is_placeholder, placeholder
from .forget import forget_user
from .invalidation import Invalidations

log = logging.getLogger(__name__)

CLOSED_EVENT = "closed"
USER_DELETED_EVENT = "user-deleted"


def closed_event(session_id: uuid.UUID, peer_email: str, at: dt.datetime) -> OutboxEntry:
    """The ``closed`` event: to the session's topic and the remaining peer's user key, after
    every earlier event of the session."""
    body = SessionClosedEvent(
        session_id=session_id, state=CLOSED, reason=PARTICIPANT_DELETED, closed_at=at
    )
    headers: dict[str, object] = {
        routing.EVENT_HEADER: CLOSED_EVENT,
        routing.SESSION_HEADER: str(session_id),
        "CC": [routing.user_key(peer_email)],
    }
    tracing.inject(headers)
    return OutboxEntry(
        session_id,
        routing.session_key(session_id),
        CLOSED_EVENT,
        headers,
        msgspec.json.encode(body),
    )


def user_deleted_event(user_email: str) -> OutboxEntry:
    """The ``user-deleted`` event: routed by the user's key only (no email in it), unordered."""
    body = UserDeletedEvent(code=USER_DELETED, detail="the account was deleted")
    headers: dict[str, object] = {routing.EVENT_HEADER: USER_DELETED_EVENT}
    tracing.inject(headers)
    return OutboxEntry(
        None, routing.user_key(user_email), USER_DELETED_EVENT, headers, msgspec.json.encode(body)
    )


class ErasureService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        invalidations: Invalidations,
        redis: Redis | None,
        presence_prefix: str = "chat:presence:",
        erased: ErasedUsers | None = None,
    ) -> None:
        self._pool = pool
        self._erased = erased
        self._invalidations = invalidations
        self._redis = redis
        self._presence_prefix = presence_prefix
        self._presence = (
            None if redis is None else RedisPresence(redis, 0.0, 0.0, prefix=presence_prefix)
        )

    async def erase(self, user_email: str) -> ErasureReport:
        """Erase ``user_email`` (normalised). Idempotent: what is gone is not found again."""
        erased_at = time.time()
        denied = await self._deny(user_email, erased_at)
        async with self._pool.acquire() as conn, conn.transaction():
            sessions = await repository.lock_sessions_of(conn, user_email)
            replacements: list[repository.Replacement] = []
            for s in sessions:
                p = placeholder(uuid.uuid4())
                replacements.append(
                    (s.session_id, s.profile_id, p.email, p.profile_id, p.display_name)
                )
            ids = [s.session_id for s in sessions]
            outbox = await repository.purge_outbox(
                conn, user_email, routing.user_key(user_email), ids
            )
            messages = await repository.erase_messages(conn, user_email, replacements)
            changes = await repository.erase_changes(conn, user_email, replacements)
            await repository.scrub_envelopes(conn, user_email, replacements)
            await repository.anonymise_participant(conn, user_email, replacements)
            keys = await repository.remove_keys(conn, user_email)
            at = dt.datetime.now(dt.UTC)
            events = [
                closed_event(s.session_id, s.peer_email, at)
                for s in sessions
                if not s.was_closed and not is_placeholder(s.peer_email)
            ]
            # always: a connection the user opened (with a token still valid) closes even
            # when chat holds nothing else of them
            events.append(user_deleted_event(user_email))
            await add_outbox(conn, events)
            await notify(conn)
            for session_id in ids:
                await notify_session_changed(conn, session_id)
        if not denied and self._erased is not None:
            await self._erased.record(user_email, erased_at)  # RedisUnavailable: 503, again
            # a connection opened after the first event went out, before this denial: closed
            async with self._pool.acquire() as conn, conn.transaction():
                await add_outbox(conn, [user_deleted_event(user_email)])
                await notify(conn)
        peers = [s.peer_email for s in sessions if not is_placeholder(s.peer_email)]
        cached = await self._forget(user_email, peers)
        return ErasureReport(
            sessions_closed=sum(1 for s in sessions if not s.was_closed),
            messages_erased=messages,
            changes_erased=changes,
            keys_removed=keys,
            outbox_rows_purged=outbox,
            cache_entries_removed=cached,
        )

    async def _deny(self, user_email: str, at: float) -> bool:
        """Deny the user's tokens issued until ``at``; False when Redis failed (the erasure
        goes on, and writes it again after the commit)."""
        if self._erased is None:
            return True
        try:
            await self._erased.record(user_email, at)
        except RedisUnavailable:
            log.warning("the erasure's denial could not be written first; again after the commit")
            return False
        return True

    async def _forget(self, user_email: str, peers: list[str]) -> int:
        """The caches: the profile on every instance, the peers' presence, Redis."""
        await self._invalidations.changed(user_email, None)
        if self._redis is None or self._presence is None:
            return 0
        for peer in dict.fromkeys(peers):
            await self._presence.set_peering(peer, user_email, False)
        return await forget_user(self._redis, user_email, self._presence_prefix)
