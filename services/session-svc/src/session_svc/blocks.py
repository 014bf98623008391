"""Use case of blocking: a participant blocks (or unblocks) the other in a session.

A change is one transaction under the session's row lock: the participant's ``blocked_at``,
then a ``block`` / ``unblock`` event to the outbox (routing key the session's, both
participants' user keys in ``CC``; ordered after every message of the session, since it
carries the session id), the relays' wake-up and a ``chat_session_changed`` notification,
on which message-svc forgets what it cached of the session. The edges end both participants'
subscriptions to the session's topic on ``block`` and forget their cached membership on
either event. The rules are :func:`session_svc.domain.blocks_after`.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import asyncpg
import msgspec

from chat_common import routing, tracing
from chat_common.dto import BlockEvent, BlockState
from chat_common.errors import Forbidden, NotFound
from chat_common.outbox import OutboxEntry, add_outbox, notify, notify_session_changed
from chat_common.presence_store import RedisPresence

from . import repository
from .domain import BlockChange, blocks_after

log = logging.getLogger(__name__)

BLOCK_EVENTS: tuple[BlockChange, ...] = ("block", "unblock")


def block_event(
    session_id: uuid.UUID,
    participants: tuple[str, str],
    change: BlockChange,
    blockers: tuple[str, ...],
    by: str,
    at: dt.datetime,
) -> OutboxEntry:
    """The outbox row that tells both participants (and the session's topic) of a change."""
    body = BlockEvent(
        session_id=session_id,
        change=change,
        blocked=bool(blockers),
        blocked_by=blockers,
        changed_by=by,
        changed_at=at,
    )
    headers: dict[str, object] = {
        routing.EVENT_HEADER: change,
        routing.SESSION_HEADER: str(session_id),
        "CC": [routing.user_key(p) for p in participants],
    }
    tracing.inject(headers)
    return OutboxEntry(
        session_id, routing.session_key(session_id), change, headers, msgspec.json.encode(body)
    )


class BlockService:
    """``presence``: where the edges keep each user's peers (who is told of their presence);
    a change updates both users' lists there, so presence stops (or starts again) flowing
    between them at once, not from their next connection."""

    def __init__(self, pool: asyncpg.Pool, presence: RedisPresence | None = None) -> None:
        self._pool = pool
        self._presence = presence

    async def change(self, user: str, session_id: uuid.UUID, change: BlockChange) -> BlockState:
        """Block or unblock ``session_id`` for ``user``: 404 unknown session, 403 not a
        participant, 403 ``NOT_BLOCKER`` for an unblock of the other's block. Idempotent: a
        request that changes nothing writes nothing and tells nobody."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await repository.lock_session(conn, session_id):
                raise NotFound("no such session", code="SESSION_NOT_FOUND")
            row = await repository.find_by_id(conn, session_id)
            if row is None:
                raise NotFound("no such session", code="SESSION_NOT_FOUND")
            emails = (row.participants[0].user_email, row.participants[1].user_email)
            if user not in emails:
                raise Forbidden("you are not a participant of this session", code="NOT_PARTICIPANT")
            after = blocks_after(user, row.blocked_by, change)
            if after is None:
                current = row.blocked_by
                return BlockState(session_id=row.id, blocked=bool(current), blocked_by=current)
            await repository.set_blocked(conn, session_id, user, change == "block")
            at = dt.datetime.now(dt.UTC)
            await add_outbox(conn, [block_event(row.id, emails, change, after, user, at)])
            await notify(conn)
            await notify_session_changed(conn, row.id)
        await self._repeer(*emails)
        return BlockState(session_id=row.id, blocked=bool(after), blocked_by=after)

    async def _repeer(self, first: str, second: str) -> None:
        """Whether the two are still peers (another session of theirs that neither blocks
        keeps them peers), written into both users' stored peers."""
        if self._presence is None:
            return
        try:
            async with self._pool.acquire() as conn:
                peered = bool(await repository.peers_among(conn, first, [second]))
            await self._presence.set_peering(first, second, peered)
            await self._presence.set_peering(second, first, peered)
        except Exception as exc:  # the peers are read again at each user's next connection
            log.warning("stored presence peers not updated after a block change: %s", exc)
