"""Use cases of the public-key registry: publish, revoke and read keys; announce each change.

Every change of a user's keys is one transaction, under the user's lock: the key row, then one
``keys`` event for the user's own devices and every user who shares a session with them,
written to the outbox in the same transaction (so the event goes out if and only if the change
committed) and published by outbox-relay to those users' keys (``/user/queue/keys`` on the
edges). The rules are in :mod:`session_svc.keys`.
"""

from __future__ import annotations

import uuid

import asyncpg
import msgspec

from chat_common import b64url, routing, tracing
from chat_common.db import Conn
from chat_common.errors import Forbidden, NotFound, RateLimited
from chat_common.keys import (
    KEYS_EVENT,
    Change,
    KeyChangeEvent,
    PublicKeyView,
    PublishKeyRequest,
    SessionKeys,
    UserKeys,
)
from chat_common.outbox import OutboxEntry, add_outbox, notify
from chat_common.ratelimit import Buckets

from . import keys, repository
from .repository import KeyRow

MAX_TOLD: int = 10_000
"""Peers told of a key change (the first ones found); any further peer sees the change the
next time it reads the session's keys."""


def view(row: KeyRow) -> PublicKeyView:
    return PublicKeyView(
        email=row.user_email,
        key_id=row.key_id,
        algorithm=row.algorithm,
        public_key=b64url.encode(row.public_key),
        fingerprint=keys.fingerprint(row.public_key),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _stored(rows: list[KeyRow]) -> list[keys.Stored]:
    return [
        keys.Stored(r.key_id, r.algorithm, r.public_key, r.revoked_at is not None) for r in rows
    ]


def change_events(
    row: KeyRow, change: Change, previous: bytes | None, peers: list[str]
) -> list[OutboxEntry]:
    """The outbox rows that announce ``change`` of ``row`` to its owner and ``peers``."""
    event = KeyChangeEvent(
        email=row.user_email,
        key_id=row.key_id,
        algorithm=row.algorithm,
        change=change,
        fingerprint=keys.fingerprint(row.public_key),
        version=row.version,
        changed_at=row.updated_at,
        previous_fingerprint=None if previous is None else keys.fingerprint(previous),
    )
    payload = msgspec.json.encode(event)
    entries = []
    for key, cc in keys.event_routes(row.user_email, peers):
        headers: dict[str, object] = {routing.EVENT_HEADER: KEYS_EVENT, "CC": cc}
        tracing.inject(headers)
        # no session: key events are not ordered with a session's messages (clients order
        # them by version)
        entries.append(OutboxEntry(None, key, KEYS_EVENT, headers, payload))
    return entries


class KeyService:
    """``changes``: the token buckets of key changes, one per user. A request that changes
    nothing (the same key again, a revoked key revoked again, a refusal) takes no token, or
    gives it back when that is found only under the lock (a concurrent request changed the
    keys meanwhile)."""

    def __init__(
        self, pool: asyncpg.Pool, changes: Buckets, *, max_keys: int, revoked_kept: int
    ) -> None:
        self._pool = pool
        self._changes = changes
        self._max_keys = max_keys
        self._revoked_kept = revoked_kept

    async def publish(
        self, user: str, key_id: str, request: PublishKeyRequest
    ) -> tuple[PublicKeyView, Change | None]:
        """Publish or replace the caller's key ``key_id``; the stored key and what changed
        (None: it was already the current key, and nobody is told again)."""
        raw = keys.public_key(request.algorithm, request.public_key)
        # what the request would do, first without the lock or a token: the same key again
        # (what a device sends at every start) and a refusal cost nothing
        async with self._pool.acquire() as conn:
            rows = await repository.keys_of(conn, user)
        first = keys.publish(_stored(rows), key_id, request.algorithm, raw, self._max_keys)
        if first.change is None:
            return view(next(r for r in rows if r.key_id == key_id)), None
        await self._take(user)
        committed = False
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await repository.lock_keys(conn, user)
                rows = await repository.keys_of(conn, user)
                decision = keys.publish(
                    _stored(rows), key_id, request.algorithm, raw, self._max_keys
                )
                if decision.change is None:
                    return view(next(r for r in rows if r.key_id == key_id)), None
                row = await repository.store_key(
                    conn, user, key_id, request.algorithm, raw, added=decision.change == "added"
                )
                await self._announce(conn, row, decision.change, decision.previous)
            committed = True
        finally:
            if not committed:  # nothing changed: the token goes back
                await self._changes.refund(routing.user_key(user))
        return view(row), decision.change

    async def revoke(self, user: str, key_id: str) -> bool:
        """Revoke the caller's key ``key_id``; False when it was revoked already."""
        async with self._pool.acquire() as conn:
            if not keys.revoke(_stored(await repository.keys_of(conn, user)), key_id):
                return False  # first without the lock or a token, as for a publish
        await self._take(user)
        committed = False
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await repository.lock_keys(conn, user)
                if not keys.revoke(_stored(await repository.keys_of(conn, user)), key_id):
                    return False
                row = await repository.revoke_key(conn, user, key_id)
                await repository.prune_revoked(conn, user, self._revoked_kept)
                await self._announce(conn, row, "revoked", None)
            committed = True
        finally:
            if not committed:
                await self._changes.refund(routing.user_key(user))
        return True

    async def _take(self, user: str) -> None:
        allowed, wait = await self._changes.take(routing.user_key(user))
        if not allowed:
            raise RateLimited(
                "too many key changes: try again later",
                retry_after=wait,
                code="KEY_CHANGES_RATE_LIMITED",
            )

    async def _announce(
        self, conn: Conn, row: KeyRow, change: Change, previous: bytes | None
    ) -> None:
        peers = await repository.peers_of(conn, row.user_email, MAX_TOLD)
        await add_outbox(conn, change_events(row, change, previous, peers))
        await notify(conn)

    async def own(self, user: str) -> UserKeys:
        async with self._pool.acquire() as conn:
            rows = await repository.current_keys(conn, [user])
        return UserKeys(email=user, keys=[view(r) for r in rows])

    async def of_session(self, user: str, session_id: uuid.UUID) -> SessionKeys:
        """Both participants' current keys: 404 unknown session, 403 not a participant."""
        async with self._pool.acquire() as conn:
            session = await repository.find_by_id(conn, session_id)
            if session is None:
                raise NotFound("no such session", code="SESSION_NOT_FOUND")
            emails = [p.user_email for p in session.participants]
            if user not in emails:
                raise Forbidden("you are not a participant of this session", code="NOT_PARTICIPANT")
            rows = await repository.current_keys(conn, emails)
        first, second = (
            UserKeys(email=e, keys=[view(r) for r in rows if r.user_email == e]) for e in emails
        )
        return SessionKeys(session_id=session.id, participants=(first, second))
