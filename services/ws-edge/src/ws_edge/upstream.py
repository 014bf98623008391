"""What the edge asks the other services, always with the user's own token: membership
(session-svc, cached briefly and looked up once for concurrent askers), history pages for a
resume or a gap fill, and read/delivered marks (message-svc)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec

from chat_common.dto import Membership
from chat_common.errors import DependencyUnavailable

from .cache import TtlCache

PAGE = 200  # message-svc's largest history page


class _Page(msgspec.Struct):
    messages: list[msgspec.Raw]


class _Seq(msgspec.Struct):
    seq: int


_page = msgspec.json.Decoder(_Page)
_seq = msgspec.json.Decoder(_Seq)
_membership = msgspec.json.Decoder(Membership)

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
    ) -> None:
        self._http = http
        self._sessions = session_svc.rstrip("/")
        self._messages = message_svc.rstrip("/")
        self._yes, self._no = yes_seconds, no_seconds
        self._clock = clock
        self._cache: TtlCache[MemberKey, Membership | None] = TtlCache(max_entries)
        self._inflight: dict[MemberKey, asyncio.Future[Membership | None]] = {}

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
        ttl = self._yes if value is not None else self._no
        self._cache.put(key, value, ttl, self._clock())
        future.set_result(value)
        return value

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
        """Every stored message with ``after < seq <= up_to`` (no upper end when ``up_to`` is
        None), oldest first, as (seq, JSON as stored).

        message-svc answers ``after=N`` with the oldest messages above N (below ``before``
        when given), newest first; the pages are sorted here and followed until one comes back
        short or the range is covered."""
        while up_to is None or after < up_to:
            limit = PAGE if up_to is None else min(PAGE, up_to - after)
            url = f"{self._messages}/api/chat/{session}/history?after={after}&limit={limit}"
            if up_to is not None:
                url += f"&before={up_to + 1}"
            answer = await self._call("GET", url, token)
            if answer.status_code != 200:
                raise DependencyUnavailable(f"history answered {answer.status_code}")
            try:
                raw = _page.decode(answer.content).messages
                page = sorted(((_seq.decode(m).seq, bytes(m)) for m in raw), key=lambda p: p[0])
            except msgspec.DecodeError as exc:
                raise DependencyUnavailable(f"history answer unreadable: {exc}") from None
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
