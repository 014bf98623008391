"""Use cases of message-svc: send, history, unread, the session list, read/delivered marks."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from chat_common.batching import PacingPolicy
from chat_common.dto import (
    HistoryPage,
    LastMessage,
    Marks,
    MessageView,
    Participant,
    ReceiptEvent,
    SendMessageRequest,
    SessionList,
    SessionSummary,
    UnreadView,
)
from chat_common.errors import (
    ChatError,
    Conflict,
    DependencyError,
    DependencyUnavailable,
    Forbidden,
    NotFound,
    RateLimited,
)

from . import repository
from .domain import check_content, content_fingerprint, session_cursor
from .events import message_event_template, receipt_event
from .groupcommit import GroupCommit, SessionGone, Stored
from .notifier import Notifier
from .ratelimit import SendLimiter
from .repository import Draft, Member
from .roster import Roster

log = logging.getLogger(__name__)

MAX_PAGE = 200

# A stored message as the repository returns it (a record, or a plain mapping).
Row = asyncpg.Record | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Sent:
    message: MessageView
    replayed: bool


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A send checked and with its limits reserved: the draft to store."""

    user_email: str
    request: SendMessageRequest
    fingerprint: str
    draft: Draft


def _view(row: Row, recipient: Member | None) -> MessageView:
    seq = int(row["seq"])
    return MessageView(
        message_id=row["id"],
        session_id=row["session_id"],
        seq=seq,
        sender_id=row["sender_profile_id"],
        sender_display_name=row["sender_display_name"],
        sender_email=row["sender_email"],
        content=row["content"],
        client_message_id=row["client_msg_id"],
        sent_at=row["sent_at"],
        delivered=recipient is not None and seq <= recipient.delivered_seq,
        seen=recipient is not None and seq <= recipient.read_seq,
    )


def _split(members: list[Member], user_email: str) -> tuple[Member, Member]:
    """(caller, peer); 404 unknown session, 403 not a participant."""
    if not members:
        raise NotFound("no such session", code="SESSION_NOT_FOUND")
    mine = [m for m in members if m.user_email == user_email]
    if not mine:
        raise Forbidden("you are not a participant of this session", code="NOT_PARTICIPANT")
    peers = [m for m in members if m.user_email != user_email]
    return mine[0], peers[0]


def _participant(m: Member) -> Participant:
    return Participant(profile_id=m.profile_id, display_name=m.display_name, email=m.user_email)


class MessageService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        limiter: SendLimiter,
        max_content_bytes: int,
        notifier: Notifier | None = None,
        *,
        roster_seconds: float = 10.0,
        max_batch: int = 256,
        pacing: PacingPolicy | None = None,
    ) -> None:
        self._pool = pool
        self._notifier = notifier or Notifier(pool)
        self._limiter = limiter
        self._max_content = max_content_bytes
        self._roster = Roster(self._load_members, ttl=roster_seconds)
        self._commit = GroupCommit(self._write_batch, max_batch=max_batch, pacing=pacing)

    async def close(self) -> None:
        """Finish the batches under way (the pool must still be open)."""
        await self._commit.close()
        await self._notifier.close()

    async def _load_members(self, session_id: uuid.UUID) -> list[Member]:
        async with self._pool.acquire() as conn:
            return await repository.members(conn, session_id)

    async def _write_batch(self, drafts: Sequence[Draft]) -> Mapping[int, Any]:
        async with self._pool.acquire() as conn:
            return await repository.insert_batch(conn, drafts)

    async def send(self, user_email: str, request: SendMessageRequest) -> Sent:
        """Store a message and its outbox row; a repeated client id from the same sender
        returns the stored message and writes nothing. Concurrent sends share one statement and
        one commit (:mod:`message_svc.groupcommit`); the answer comes after the commit. The
        send limits are reserved first and given back when nothing was stored."""
        prepared = await self._prepare(user_email, request)
        if isinstance(prepared, Sent):
            return prepared
        return await self._finish(
            prepared, await self._settled(prepared, self._commit.enqueue(prepared.draft))
        )

    async def send_many(
        self, user_email: str, requests: Sequence[SendMessageRequest]
    ) -> list[Sent | ChatError]:
        """Several sends of one sender, each with its own outcome (a refused one never fails
        the others), stored in the order given. They are checked one after the other, so the
        sender's send tokens go to the first ones when there are not enough for all."""
        prepared: list[_Prepared | Sent | Exception] = []
        for r in requests:
            try:
                prepared.append(await self._prepare(user_email, r))
            except Exception as exc:
                prepared.append(exc)
        pending = [  # enqueued in request order, so stored in request order
            self._commit.enqueue(p.draft) if isinstance(p, _Prepared) else None for p in prepared
        ]
        results: list[Sent | ChatError] = []
        for item, future in zip(prepared, pending, strict=True):
            try:
                if isinstance(item, Exception):
                    raise item
                if isinstance(item, Sent):
                    results.append(item)
                    continue
                assert future is not None
                results.append(await self._finish(item, await self._settled(item, future)))
            except ChatError as exc:  # DatabaseUnavailable too: translated by the pool
                results.append(exc)
        return results

    async def _prepare(self, user_email: str, request: SendMessageRequest) -> _Prepared | Sent:
        """Check and reserve what a send needs before it is stored: content, membership, the
        send limits. A retry of a stored send is answered (the replay) from the store even
        when the limits are spent."""
        check_content(request.content, self._max_content)
        members = await self._roster.members(request.session_id)
        me, peer = _split(members, user_email)
        fingerprint = content_fingerprint(request.content)
        client_id = str(request.client_message_id)
        try:
            await self._limiter.acquire(user_email, fingerprint, client_id)
        except RateLimited:
            async with self._pool.acquire() as conn:
                prior = await repository.find_by_client_id(
                    conn, user_email, request.client_message_id
                )
            if prior is None:
                raise
            return await self._replay(prior, request, user_email)
        sent_at = dt.datetime.now(dt.UTC)
        message_id = uuid.uuid4()
        view = MessageView(
            message_id=message_id,
            session_id=request.session_id,
            seq=0,
            sender_id=me.profile_id,
            sender_display_name=me.display_name,
            sender_email=me.user_email,
            content=request.content,
            client_message_id=request.client_message_id,
            sent_at=sent_at,
        )
        draft = Draft(
            message_id=message_id,
            session_id=request.session_id,
            sender=me,
            content=request.content,
            client_msg_id=request.client_message_id,
            sent_at=sent_at,
            event=message_event_template(view, [me, peer]),
        )
        return _Prepared(user_email, request, fingerprint, draft)

    async def _settled(self, prepared: _Prepared, pending: asyncio.Future[Stored]) -> Stored:
        """The batch's outcome for this send; its limits given back if it failed."""
        try:
            return await asyncio.shield(pending)
        except SessionGone:
            await self._give_back(prepared, content=True)
            raise NotFound("session not found", code="SESSION_NOT_FOUND") from None
        except repository.ClientIdTaken:
            await self._give_back(prepared, content=True)
            raise DependencyUnavailable("the message could not be stored; send it again") from None
        except BaseException:
            await self._give_back(prepared, content=True)
            raise

    async def _finish(self, prepared: _Prepared, stored: Stored) -> Sent:
        if stored.new:
            return Sent(_view(stored.row, None), replayed=False)
        # an earlier message of this sender with this client id: nothing new was stored
        same_content = content_fingerprint(stored.row["content"]) == prepared.fingerprint
        await self._give_back(prepared, content=not same_content)
        return await self._replay(stored.row, prepared.request, prepared.user_email)

    async def _give_back(self, prepared: _Prepared, *, content: bool) -> None:
        """Give back the token of a send that stored nothing new and, with ``content``, its
        use of the content. A limiter store that is down only costs the sender these."""
        user = prepared.user_email
        try:
            await self._limiter.refund(user)
            if content:
                await self._limiter.forget(
                    user, prepared.fingerprint, str(prepared.request.client_message_id)
                )
        except DependencyError as exc:
            log.warning("send limits not given back: %s", exc)

    async def _replay(self, existing: Row, request: SendMessageRequest, user_email: str) -> Sent:
        """The stored message again (with the peer's current marks), or 409 when the client
        id was used for another session."""
        if existing["session_id"] != request.session_id:
            raise Conflict(
                "this clientMessageId was already used for another session",
                code="CLIENT_MESSAGE_ID_REUSED",
                field="clientMessageId",
            )
        async with self._pool.acquire() as conn:
            members = await repository.members(conn, request.session_id)
        _, peer = _split(members, user_email)
        return Sent(_view(existing, peer), replayed=True)

    async def history(
        self,
        user_email: str,
        session_id: uuid.UUID,
        *,
        limit: int,
        before: int | None,
        after: int | None,
    ) -> HistoryPage:
        async with self._pool.acquire() as conn:
            me, peer = _split(await repository.members(conn, session_id), user_email)
            rows = await repository.history(
                conn, session_id, limit=min(limit, MAX_PAGE), before=before, after=after
            )
        views = [_view(r, peer if r["sender_email"] == user_email else me) for r in rows]
        return HistoryPage(session_id=session_id, messages=views)

    async def unread(self, user_email: str, session_id: uuid.UUID) -> UnreadView:
        async with self._pool.acquire() as conn:
            me, _ = _split(await repository.members(conn, session_id), user_email)
            count, rows = await repository.unread(conn, session_id, me, MAX_PAGE)
        return UnreadView(session_id=session_id, count=count, messages=[_view(r, me) for r in rows])

    async def sessions(
        self,
        user_email: str,
        *,
        limit: int = 50,
        before: tuple[dt.datetime, uuid.UUID] | None = None,
    ) -> SessionList:
        async with self._pool.acquire() as conn:
            rows = await repository.sessions_of(conn, user_email, limit=limit, before=before)
        following = None
        if len(rows) == limit:
            following = session_cursor(rows[-1]["activity"], rows[-1]["session_id"])
        return SessionList(
            next_before=following,
            sessions=[
                SessionSummary(
                    session_id=r["session_id"],
                    intent=r["intent"],
                    me=Participant(
                        profile_id=r["me_profile_id"],
                        display_name=r["me_display_name"],
                        email=r["me_email"],
                    ),
                    peer=Participant(
                        profile_id=r["peer_profile_id"],
                        display_name=r["peer_display_name"],
                        email=r["peer_email"],
                    ),
                    last_message=None
                    if r["last_id"] is None
                    else LastMessage(
                        message_id=r["last_id"],
                        seq=r["last_seq"],
                        sender_email=r["last_sender"],
                        content=r["last_content"],
                        sent_at=r["last_sent_at"],
                    ),
                    unread_count=int(r["unread_count"]),
                    created_at=r["created_at"],
                )
                for r in rows
            ],
        )

    async def mark(self, user_email: str, session_id: uuid.UUID, kind: str, up_to: int) -> Marks:
        """Move the caller's read or delivered mark; when it moved, both participants get a
        receipt event through the outbox."""
        async with self._pool.acquire() as conn, conn.transaction():
            members = await repository.members(conn, session_id)
            me, peer = _split(members, user_email)
            read_seq, delivered_seq, moved = await repository.move_mark(
                conn, session_id, me.profile_id, kind, up_to
            )
            if moved:
                receipt = ReceiptEvent(
                    session_id=session_id,
                    kind=kind,
                    profile_id=me.profile_id,
                    email=me.user_email,
                    up_to_seq=read_seq if kind == "read" else delivered_seq,
                )
                await repository.add_outbox(conn, [receipt_event(receipt, [me, peer])])
        if moved:
            self._notifier.poke()
        return Marks(session_id=session_id, read_seq=read_seq, delivered_seq=delivered_seq)
