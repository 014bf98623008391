"""Use cases of message-svc: send, edit and delete, history and the session's events, unread,
the session list, read/delivered marks."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from chat_common.batching import PacingPolicy
from chat_common.dto import (
    Envelope,
    EventsPage,
    HistoryPage,
    Marks,
    MessageChange,
    MessageView,
    ReceiptEvent,
    SendMessageRequest,
    SessionEvent,
    SessionList,
    UnreadView,
)
from chat_common.errors import (
    ChatError,
    Conflict,
    DependencyError,
    DependencyUnavailable,
    NotFound,
    RateLimited,
)

from . import repository
from .domain import (
    PriorChange,
    Target,
    check_body,
    check_change,
    check_content,
    check_envelope,
    check_open,
    check_recipients,
    check_replay,
    content_fingerprint,
    envelope_fingerprint,
    refusal,
    session_closed,
    session_cursor,
)
from .events import change_event, message_event_template, receipt_event
from .groupcommit import GroupCommit, SessionGone, Stored
from .members import any_blocked, caller_and_peer, closed_reason
from .notifier import Notifier
from .ratelimit import SendLimiter
from .repository import Draft, Member
from .roster import Roster
from .views import Row, change_view, event_change_view, message_view, session_summary

log = logging.getLogger(__name__)

MAX_PAGE = 200


def _fingerprint(content: str | None, encrypted: bytes | None) -> str:
    """What the duplicate rule counts: the text, or (encrypted) the envelope as stored."""
    if encrypted is not None:
        return envelope_fingerprint(encrypted)
    return content_fingerprint(content or "")


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


@dataclass(frozen=True, slots=True)
class Changed:
    change: MessageChange
    replayed: bool


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
        edit_window_seconds: float = 900.0,
        max_encrypted_bytes: int = 12288,
    ) -> None:
        self._pool = pool
        self._max_encrypted = max_encrypted_bytes
        self._edit_window = dt.timedelta(seconds=edit_window_seconds)
        self._notifier = notifier or Notifier(pool)
        self._limiter = limiter
        self._max_content = max_content_bytes
        self._roster = Roster(self._load_members, ttl=roster_seconds)
        self._commit = GroupCommit(self._write_batch, max_batch=max_batch, pacing=pacing)

    @property
    def roster(self) -> Roster:
        """The cached participants of sessions (told of blocks by the session watch)."""
        return self._roster

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

    def _check_body(self, content: str | None, encrypted: Envelope | None) -> bytes | None:
        """Text or an envelope, checked (shape and size only for an envelope); the envelope
        as it is stored and delivered."""
        if check_body(content, encrypted) == "content":
            assert content is not None
            check_content(content, self._max_content)
            return None
        assert encrypted is not None
        encoded = msgspec.json.encode(encrypted)
        check_envelope(encrypted, len(encoded), self._max_encrypted)
        return encoded

    async def _prepare(self, user_email: str, request: SendMessageRequest) -> _Prepared | Sent:
        """Check and reserve what a send needs before it is stored: content (or envelope),
        membership, the send limits. A retry of a stored send is answered (the replay) from
        the store even when the limits are spent."""
        encrypted = self._check_body(request.content, request.encrypted)
        members = await self._roster.members(request.session_id)
        me, peer = caller_and_peer(members, user_email)
        refused = refusal(any_blocked(members), closed_reason(members))
        if refused is not None:
            # a retry of a send stored before the block (or the close) is still answered
            async with self._pool.acquire() as conn:
                earlier = await repository.find_by_client_id(
                    conn, user_email, request.client_message_id
                )
            if earlier is None:
                raise refused
            return await self._replay(earlier, request, user_email)
        if request.encrypted is not None:
            check_recipients(request.encrypted, (m.user_email for m in members))
        fingerprint = _fingerprint(request.content, encrypted)
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
            content=request.content or "",
            client_message_id=request.client_message_id,
            sent_at=sent_at,
            encrypted=request.encrypted,
        )
        draft = Draft(
            message_id=message_id,
            session_id=request.session_id,
            sender=me,
            content=request.content,
            client_msg_id=request.client_message_id,
            sent_at=sent_at,
            event=message_event_template(view, [me, peer]),
            encrypted=encrypted,
        )
        return _Prepared(user_email, request, fingerprint, draft)

    async def _settled(self, prepared: _Prepared, pending: asyncio.Future[Stored]) -> Stored:
        """The batch's outcome for this send; its limits given back if it failed."""
        try:
            return await asyncio.shield(pending)
        except SessionGone:
            await self._give_back(prepared, content=True)
            # closed while the send waited for the session's lock (an erasure held it)?
            async with self._pool.acquire() as conn:
                members = await repository.members(conn, prepared.request.session_id)
            closed = closed_reason(members)
            if closed is not None:
                raise session_closed(closed) from None
            raise NotFound("session not found", code="SESSION_NOT_FOUND") from None
        except repository.ClientIdTaken:
            await self._give_back(prepared, content=True)
            raise DependencyUnavailable("the message could not be stored; send it again") from None
        except BaseException:
            await self._give_back(prepared, content=True)
            raise

    async def _finish(self, prepared: _Prepared, stored: Stored) -> Sent:
        if stored.new:
            return Sent(message_view(stored.row, None), replayed=False)
        # an earlier message of this sender with this client id: nothing new was stored
        row = stored.row  # content and encrypted None: the message was deleted since
        same_content = (row["content"] is not None or row["encrypted"] is not None) and (
            _fingerprint(row["content"], row["encrypted"]) == prepared.fingerprint
        )
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
        _, peer = caller_and_peer(members, user_email)
        return Sent(message_view(existing, peer), replayed=True)

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
            me, peer = caller_and_peer(await repository.members(conn, session_id), user_email)
            rows = await repository.history(
                conn, session_id, limit=min(limit, MAX_PAGE), before=before, after=after
            )
        views = [message_view(r, peer if r["sender_email"] == user_email else me) for r in rows]
        return HistoryPage(session_id=session_id, messages=views)

    async def events(
        self, user_email: str, session_id: uuid.UUID, *, after: int, before: int | None, limit: int
    ) -> EventsPage:
        """A page of the session's events above ``after``, oldest first: every seq is a
        message (in its current state) or an edit or delete of one. What a client that
        resumes reads (the edges' ``x-resume-after-seq`` replay and gap fills)."""
        async with self._pool.acquire() as conn:
            me, peer = caller_and_peer(await repository.members(conn, session_id), user_email)
            rows = await repository.events(
                conn, session_id, after=after, before=before, limit=min(limit, MAX_PAGE)
            )
        found: list[SessionEvent] = []
        for r in rows:
            if r["is_change"]:
                change = event_change_view(r)
                found.append(SessionEvent(event=change.change, seq=change.seq, change=change))
            else:
                view = message_view(r, peer if r["sender_email"] == user_email else me)
                found.append(SessionEvent(event="message", seq=view.seq, message=view))
        return EventsPage(session_id=session_id, events=found)

    async def change(
        self,
        user_email: str,
        session_id: uuid.UUID,
        message_id: uuid.UUID,
        client_message_id: uuid.UUID,
        content: str | None = None,
        encrypted: Envelope | None = None,
        *,
        edit: bool | None = None,
    ) -> Changed:
        """Edit (``edit``, with ``content`` or an ``encrypted`` envelope; by default when
        either is given) or delete a message of the caller's: the change gets the session's
        next seq and its outbox row in the transaction that changes the message. The same
        ``client_message_id`` of the same change answers the stored change again
        (``replayed``) and writes nothing; used for another change it is 409. A change takes
        a send token from the sender's send limits (given back when nothing is written)."""
        if edit is None:
            edit = content is not None or encrypted is not None
        kind = "edit" if edit else "delete"
        envelope: bytes | None = None
        if edit:
            envelope = self._check_body(content, encrypted)
        members = await self._roster.members(session_id)
        caller_and_peer(members, user_email)
        if encrypted is not None:
            check_recipients(encrypted, (m.user_email for m in members))
        async with self._pool.acquire() as conn:
            prior = await repository.find_change(conn, user_email, client_message_id)
        if prior is not None:  # a retry: answered even when the send limits are spent
            return self._replayed(prior, kind, session_id, message_id)
        check_open(any_blocked(members), closed_reason(members))
        # its own content use, so the duplicate-content rule never refuses a change
        fingerprint = f"change:{client_message_id}"
        await self._limiter.acquire(user_email, fingerprint, str(client_message_id))
        try:
            changed = await self._change(
                user_email,
                session_id,
                message_id,
                client_message_id,
                kind,
                content,
                (encrypted, envelope),
            )
        except BaseException:
            await self._give_back_change(user_email, fingerprint, client_message_id)
            raise
        if changed.replayed:
            await self._give_back_change(user_email, fingerprint, client_message_id)
        else:
            self._notifier.poke()
        return changed

    async def _change(
        self,
        user_email: str,
        session_id: uuid.UUID,
        message_id: uuid.UUID,
        client_message_id: uuid.UUID,
        kind: str,
        content: str | None,
        envelope: tuple[Envelope | None, bytes | None] = (None, None),
    ) -> Changed:
        encrypted, stored_envelope = envelope
        for attempt in range(2):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    if not await repository.lock_session(conn, session_id):
                        raise NotFound("no such session", code="SESSION_NOT_FOUND")
                    members = await repository.members(conn, session_id)
                    me, peer = caller_and_peer(members, user_email)
                    # again under the lock: a concurrent retry may have committed meanwhile
                    prior = await repository.find_change(conn, user_email, client_message_id)
                    if prior is not None:
                        return self._replayed(prior, kind, session_id, message_id)
                    # under the lock a block also takes
                    check_open(any_blocked(members), closed_reason(members))
                    row = await repository.message_for_change(conn, session_id, message_id)
                    target = None
                    if row is not None:
                        target = Target(
                            row["sender_email"],
                            row["sent_at"],
                            row["deleted_at"] is not None,
                            encrypted=row["encrypted"] is not None,
                        )
                    changed_at = dt.datetime.now(dt.UTC)
                    check_change(
                        kind,
                        target,
                        user_email,
                        changed_at,
                        self._edit_window,
                        encrypted=encrypted is not None,
                    )
                    assert row is not None
                    seq = await repository.apply_change(
                        conn,
                        session_id=session_id,
                        message_id=message_id,
                        kind=kind,
                        sender_email=user_email,
                        client_msg_id=client_message_id,
                        content=content,
                        changed_at=changed_at,
                        encrypted=stored_envelope,
                    )
                    change = MessageChange(
                        change=kind,
                        session_id=session_id,
                        seq=seq,
                        message_id=message_id,
                        message_seq=int(row["seq"]),
                        sender_id=me.profile_id,
                        sender_email=user_email,
                        content=content or "",
                        client_message_id=client_message_id,
                        changed_at=changed_at,
                        encrypted=encrypted,
                    )
                    await repository.add_outbox(conn, [change_event(change, [me, peer])])
                    return Changed(change, replayed=False)
            except repository.ChangeClientIdTaken:
                # a concurrent change of this user took the client id: found on the retry
                if attempt:
                    break
        raise DependencyUnavailable("the change could not be stored; send it again")

    @staticmethod
    def _replayed(prior: Row, kind: str, session_id: uuid.UUID, message_id: uuid.UUID) -> Changed:
        check_replay(
            PriorChange(prior["kind"], prior["session_id"], prior["message_id"]),
            kind,
            session_id,
            message_id,
        )
        return Changed(change_view(prior), replayed=True)

    async def _give_back_change(
        self, user_email: str, fingerprint: str, client_message_id: uuid.UUID
    ) -> None:
        try:
            await self._limiter.refund(user_email)
            await self._limiter.forget(user_email, fingerprint, str(client_message_id))
        except DependencyError as exc:
            log.warning("send limits not given back: %s", exc)

    async def unread(self, user_email: str, session_id: uuid.UUID) -> UnreadView:
        async with self._pool.acquire() as conn:
            me, _ = caller_and_peer(await repository.members(conn, session_id), user_email)
            count, rows = await repository.unread(conn, session_id, me, MAX_PAGE)
        return UnreadView(
            session_id=session_id, count=count, messages=[message_view(r, me) for r in rows]
        )

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
            sessions=[session_summary(r) for r in rows],
        )

    async def mark(self, user_email: str, session_id: uuid.UUID, kind: str, up_to: int) -> Marks:
        """Move the caller's read or delivered mark; when it moved, both participants get a
        receipt event through the outbox."""
        async with self._pool.acquire() as conn, conn.transaction():
            members = await repository.members(conn, session_id)
            me, peer = caller_and_peer(members, user_email)
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
