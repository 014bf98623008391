"""Use cases of message-svc: send, history, unread, the session list, read/delivered marks."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from chat_common.db import Conn
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
from chat_common.errors import Conflict, DependencyError, Forbidden, NotFound

from . import repository
from .domain import check_content, content_fingerprint
from .events import message_event_template, receipt_event
from .notifier import Notifier
from .ratelimit import SendLimiter
from .repository import Member

log = logging.getLogger(__name__)

MAX_PAGE = 200

# A stored message as the repository returns it (a record, or a plain mapping).
Row = asyncpg.Record | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Sent:
    message: MessageView
    replayed: bool


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
    ) -> None:
        self._pool = pool
        self._notifier = notifier or Notifier(pool)
        self._limiter = limiter
        self._max_content = max_content_bytes

    async def send(self, user_email: str, request: SendMessageRequest) -> Sent:
        """Store a message and its outbox row in one transaction; a repeated client id from
        the same sender returns the stored message and writes nothing. The send limits are
        reserved before the insert and given back when nothing was stored; nothing but the
        wake-up of the relays happens after the commit.

        Two round trips: the participants with any earlier use of the client id, then one
        statement that allocates the seq and writes the message and its outbox row."""
        check_content(request.content, self._max_content)
        async with self._pool.acquire() as conn:
            context = await repository.send_context(
                conn, request.session_id, user_email, request.client_message_id
            )
            me, peer = _split(context.members, user_email)
            if context.prior is not None:
                return self._replay(context.prior, request, peer)
            fingerprint = content_fingerprint(request.content)
            client_id = str(request.client_message_id)
            await self._limiter.acquire(user_email, fingerprint, client_id)
            try:
                row = await self._insert(conn, me, peer, request)
            except repository.ClientIdTaken:  # a concurrent send with the same id won
                existing = await repository.find_by_client_id(
                    conn, user_email, request.client_message_id
                )
                assert existing is not None
                same_content = content_fingerprint(existing["content"]) == fingerprint
                await self._give_back(user_email, fingerprint, client_id, content=not same_content)
                return self._replay(existing, request, peer)
            except BaseException:
                await self._give_back(user_email, fingerprint, client_id, content=True)
                raise
        self._notifier.poke()
        return Sent(_view(row, peer), replayed=False)

    async def _give_back(
        self, user_email: str, fingerprint: str, client_id: str, *, content: bool
    ) -> None:
        """Give back the token of a send that stored nothing new and, with ``content``, its
        use of the content. A limiter store that is down only costs the sender these."""
        try:
            await self._limiter.refund(user_email)
            if content:
                await self._limiter.forget(user_email, fingerprint, client_id)
        except DependencyError as exc:
            log.warning("send limits not given back: %s", exc)

    async def _insert(
        self, conn: Conn, me: Member, peer: Member, request: SendMessageRequest
    ) -> Row:
        message_id = uuid.uuid4()
        sent_at = dt.datetime.now(dt.UTC)
        draft = MessageView(
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
        row = await repository.insert_message_and_event(
            conn,
            message_id=message_id,
            session_id=request.session_id,
            sender=me,
            content=request.content,
            client_msg_id=request.client_message_id,
            sent_at=sent_at,
            event=message_event_template(draft, [me, peer]),
        )
        if row is None:
            raise NotFound("session not found", code="SESSION_NOT_FOUND")
        return row

    @staticmethod
    def _replay(existing: Row, request: SendMessageRequest, peer: Member) -> Sent:
        if existing["session_id"] != request.session_id:
            raise Conflict(
                "this clientMessageId was already used for another session",
                code="CLIENT_MESSAGE_ID_REUSED",
                field="clientMessageId",
            )
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

    async def sessions(self, user_email: str) -> SessionList:
        async with self._pool.acquire() as conn:
            rows = await repository.sessions_of(conn, user_email)
        return SessionList(
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
            ]
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
