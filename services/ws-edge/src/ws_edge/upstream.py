"""What the edge asks the other services, always with the user's own token: membership
(session-svc, cached briefly and looked up once for concurrent askers), history pages for a
resume or a gap fill, read/delivered marks, and the messages a client SENDs (message-svc)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx
import msgspec

from chat_common import routing, tracing
from chat_common.dto import (
    GroupedSendAnswer,
    GroupedSendRequest,
    Membership,
    SendGroup,
    SendMessageRequest,
    SentGroup,
    SentItem,
)
from chat_common.errors import DependencyUnavailable
from chat_common.grouping import Group, GroupBatcher, Sender
from chat_common.presence import Peers

from .answers import Refused, SendAnswer, Stored, Unanswered
from .cache import TtlCache
from .commands import DeleteMessage, EditMessage
from .metrics import HISTORY_PAGES

PAGE = 200  # message-svc's largest history page


class _Event(msgspec.Struct):
    seq: int
    message: msgspec.Raw = msgspec.Raw()
    change: msgspec.Raw = msgspec.Raw()


class _Page(msgspec.Struct):
    events: list[_Event]


class _Stored(msgspec.Struct):
    session_id: str = msgspec.field(name="sessionId")
    seq: int = 0


class _Problem(msgspec.Struct):
    code: str = "REFUSED"
    detail: str = "the message was refused"


_page = msgspec.json.Decoder(_Page)
_stored = msgspec.json.Decoder(_Stored)
_problem = msgspec.json.Decoder(_Problem)
_grouped = msgspec.json.Decoder(GroupedSendAnswer)
_membership = msgspec.json.Decoder(Membership)
_peers = msgspec.json.Decoder(Peers)

MemberKey = tuple[str, uuid.UUID]


class Upstream:
    def __init__(
        self,
        http: httpx.AsyncClient,
        session_svc: str,
        message_svc: str,
        *,
        yes_seconds: float = 30.0,
        no_seconds: float = 5.0,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
        send_client: aiohttp.ClientSession | None = None,
        sends_in_flight: int = 2,
        send_timeout_seconds: float | None = None,
    ) -> None:
        self._http = http
        # SENDs go by aiohttp: the edge's busiest call, where httpx's pool costs several
        # times more CPU per request.
        self._send_client = send_client
        self._send_timeout = send_timeout_seconds
        self._sends: GroupBatcher[Sender, SendMessageRequest, SendAnswer] = GroupBatcher(
            self._send_groups,
            lambda exc: Unanswered(f"send failed: {type(exc).__name__}"),
            max_in_flight=sends_in_flight,
        )
        self._sessions = session_svc.rstrip("/")
        self._messages = message_svc.rstrip("/")
        self._yes, self._no = yes_seconds, no_seconds
        self._clock = clock
        self._cache: TtlCache[MemberKey, Membership | None] = TtlCache(max_entries)
        self._inflight: dict[MemberKey, asyncio.Future[Membership | None]] = {}
        self._stale: set[MemberKey] = set()  # look-ups under way when their session changed

    def forget_session(self, session: uuid.UUID) -> None:
        """The session changed (blocked or unblocked): ask session-svc again at its next use.
        A look-up under way was answered before the change: its askers get it, the cache
        does not keep it."""
        self._cache.discard_where(lambda key: key[1] == session)
        self._stale.update(key for key in self._inflight if key[1] == session)

    async def membership(self, email: str, token: str, session: uuid.UUID) -> Membership | None:
        """The caller's membership of ``session``, or None when not a participant (or no such
        session). Raises ``DependencyUnavailable`` when session-svc cannot answer."""
        key = (email, session)
        hit = self._cache.get(key, self._clock())
        if hit is not None:
            return hit.value
        while (pending := self._inflight.get(key)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled
                # the caller that was asking went away: ask again
        future: asyncio.Future[Membership | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await self._ask_membership(token, session)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self._inflight[key]
            stale = key in self._stale
            self._stale.discard(key)
        if not stale:
            ttl = self._yes if value is not None else self._no
            self._cache.put(key, value, ttl, self._clock())
        future.set_result(value)
        return value

    async def peers(self, token: str) -> tuple[str, ...]:
        """The users who share a session with the token's user, as their routing keys
        (session-svc ``GET /internal/peers``); raises ``DependencyUnavailable``."""
        answer = await self._call("GET", f"{self._sessions}/internal/peers", token)
        if answer.status_code != 200:
            raise DependencyUnavailable(f"peers look-up answered {answer.status_code}")
        try:
            peers = _peers.decode(answer.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DependencyUnavailable(f"peers answer unreadable: {exc}") from None
        return tuple(routing.user_key(email) for email in peers.emails)

    async def _ask_membership(self, token: str, session: uuid.UUID) -> Membership | None:
        url = f"{self._sessions}/internal/sessions/{session}/membership"
        answer = await self._call("GET", url, token)
        if answer.status_code == 200:
            try:
                return _membership.decode(answer.content)
            except msgspec.DecodeError as exc:
                raise DependencyUnavailable(f"membership answer unreadable: {exc}") from None
        if answer.status_code in (401, 403, 404):
            return None
        raise DependencyUnavailable(f"membership check answered {answer.status_code}")

    async def history_after(
        self, token: str, session: uuid.UUID, after: int, up_to: int | None = None
    ) -> AsyncIterator[tuple[int, bytes]]:
        """Every stored event with ``after < seq <= up_to`` (no upper end when ``up_to`` is
        None), oldest first, as (seq, JSON body): a message in its current state, or an edit
        or delete of one (its body names it: ``fanout.stored_kind``).

        message-svc's events answer ``after=N`` with the oldest events above N (below
        ``before`` when given); the pages are sorted here and followed until one comes back
        short or the range is covered."""
        while up_to is None or after < up_to:
            limit = PAGE if up_to is None else min(PAGE, up_to - after)
            url = f"{self._messages}/api/chat/{session}/events?after={after}&limit={limit}"
            if up_to is not None:
                url += f"&before={up_to + 1}"
            HISTORY_PAGES.inc()
            answer = await self._call("GET", url, token)
            if answer.status_code != 200:
                raise DependencyUnavailable(f"history answered {answer.status_code}")
            try:
                events = _page.decode(answer.content).events
                page = sorted(((e.seq, bytes(e.change or e.message)) for e in events), key=_first)
            except msgspec.DecodeError as exc:
                raise DependencyUnavailable(f"history answer unreadable: {exc}") from None
            if not all(body for _, body in page):
                raise DependencyUnavailable("history answer has an event with no body")
            for seq, body in page:
                if seq > after and (up_to is None or seq <= up_to):
                    yield seq, body
            if len(page) < limit:
                return
            after = max(after, page[-1][0])

    async def mark(self, token: str, session: uuid.UUID, kind: str, up_to: int) -> int:
        """Move the caller's ``read`` or ``delivered`` mark; message-svc's status code."""
        url = f"{self._messages}/api/chat/{session}/{kind}"
        answer = await self._call("POST", url, token, {"upToSeq": up_to})
        return answer.status_code

    async def change(self, token: str, change: EditMessage | DeleteMessage) -> SendAnswer:
        """An edit or a delete of a message (message-svc's ``PATCH`` or ``DELETE
        /api/chat/{sessionId}/messages/{messageId}``): stored (the change), refused, or
        unanswered."""
        url = f"{self._messages}/api/chat/{change.session_id}/messages/{change.message_id}"
        body: dict[str, Any] = {"clientMessageId": str(change.client_message_id)}
        if isinstance(change, EditMessage):
            if change.content is not None:
                body["content"] = change.content
            if change.encrypted is not None:
                body["encrypted"] = msgspec.to_builtins(change.encrypted)
        try:
            answer = await self._call(
                "PATCH" if isinstance(change, EditMessage) else "DELETE", url, token, body
            )
        except DependencyUnavailable as exc:
            return Unanswered(exc.detail)
        if answer.status_code != 200:
            return _refusal(answer.status_code, answer.content)
        try:
            return _stored_answer(answer.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Unanswered(f"change answer unreadable: {exc}")

    async def send(self, token: str, requests: list[SendMessageRequest]) -> list[SendAnswer]:
        """Store messages from one user (1 to ``BULK_MAX``): an answer per request, in order.
        Concurrent calls go to message-svc together (:mod:`chat_common.grouping`)."""
        trace: dict[str, str] = {}
        tracing.inject(trace)
        sender = Sender(token, trace=trace or None)
        try:  # the wait for a free request included: a SEND unanswered by then goes the queue's way
            async with asyncio.timeout(self._send_timeout):
                return await self._sends.store(sender, requests)
        except TimeoutError:
            return [Unanswered("message-svc did not answer in time")] * len(requests)

    async def _send_groups(
        self, groups: list[Group[Sender, SendMessageRequest]]
    ) -> list[list[SendAnswer]]:
        """One ``POST /internal/sends`` for several senders' messages."""
        if self._send_client is None:
            raise RuntimeError("this Upstream was made without a client for sends")
        payload = GroupedSendRequest(
            groups=[
                SendGroup(token=s.token, messages=[_raw(m) for m in messages], trace=s.trace)
                for s, messages in groups
            ]
        )
        headers = {"Content-Type": "application/json"}
        try:
            async with self._send_client.post(
                f"{self._messages}/internal/sends",
                data=msgspec.json.encode(payload),
                headers=headers,
            ) as answer:
                status, content = answer.status, await answer.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _all(groups, Unanswered(f"message-svc unreachable: {type(exc).__name__}"))
        if status != 200:
            return _all(groups, _refusal(status, content))
        try:
            results = _grouped.decode(content).groups
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _all(groups, Unanswered(f"send answer unreadable: {exc}"))
        if len(results) != len(groups):
            return _all(groups, Unanswered("send answer does not match the request"))
        return [_group_answers(g, r) for g, r in zip(groups, results, strict=True)]

    async def _call(
        self, method: str, url: str, token: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method, url, json=body, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            host = httpx.URL(url).host
            raise DependencyUnavailable(f"{host} unreachable: {type(exc).__name__}") from None


def _first(pair: tuple[int, bytes]) -> int:
    return pair[0]


def _stored_answer(body: bytes) -> Stored:
    head = _stored.decode(body)
    return Stored(body=body, session=head.session_id, seq=head.seq)


def _refusal(status: int, body: bytes) -> SendAnswer:
    """A whole request's or an item's non-200 answer: a server fault is unanswered, the rest
    refused with the problem's code and detail."""
    if status >= 500:
        return Unanswered(f"message-svc answered {status}")
    try:
        problem = _problem.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        problem = _Problem(detail=f"message-svc answered {status}")
    return Refused(problem.code, problem.detail)


def _all(
    groups: list[Group[Sender, SendMessageRequest]], answer: SendAnswer
) -> list[list[SendAnswer]]:
    return [[answer] * len(messages) for _, messages in groups]


def _raw(request: SendMessageRequest) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(request))


def _group_answers(group: Group[Sender, SendMessageRequest], result: SentGroup) -> list[SendAnswer]:
    size = len(group[1])
    if result.status != 200:
        return [_problem_answer(result.status, result.problem, "for a sender")] * size
    items = sorted(result.results, key=lambda item: item.index)
    if [item.index for item in items] != list(range(size)):
        return [Unanswered("send answer does not match the request")] * size
    return [_item_answer(item) for item in items]


def _item_answer(item: SentItem) -> SendAnswer:
    if item.status == 200 and item.message:
        try:
            return _stored_answer(bytes(item.message))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Unanswered(f"send answer unreadable: {exc}")
    return _problem_answer(item.status, item.problem, "for a message")


def _problem_answer(status: int, problem: msgspec.Raw, about: str) -> SendAnswer:
    """A group's or an item's refusal; without a problem to read, unanswered."""
    if not problem:
        return Unanswered(f"message-svc answered {status} {about}")
    return _refusal(status, bytes(problem))
