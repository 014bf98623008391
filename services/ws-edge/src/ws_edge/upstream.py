"""What the edge asks the other services, with the user's own token: membership (cached
briefly), history pages for a resume, and read/delivered marks."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec

from chat_common.errors import DependencyUnavailable

PAGE = 200


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
        self._max = max_entries
        self._clock = clock
        self._cache: OrderedDict[tuple[str, uuid.UUID], tuple[float, dict[str, Any] | None]] = (
            OrderedDict()
        )

    async def membership(self, email: str, token: str, session: uuid.UUID) -> dict[str, Any] | None:
        """The caller's membership (``me``/``peer``), or None when not a participant."""
        key = (email, session)
        hit = self._cache.get(key)
        now = self._clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        answer = await self._call(
            "GET", f"{self._sessions}/internal/sessions/{session}/membership", token
        )
        if answer.status_code == 200:
            value: dict[str, Any] | None = msgspec.json.decode(answer.content)
            ttl = self._yes
        elif answer.status_code in (403, 404):
            value, ttl = None, self._no
        else:
            raise DependencyUnavailable(f"membership check answered {answer.status_code}")
        self._cache[key] = (now + ttl, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return value

    async def history_after(
        self, token: str, session: uuid.UUID, after: int
    ) -> AsyncIterator[tuple[int, bytes]]:
        """Every stored message with seq > ``after``, oldest first, as (seq, JSON body)."""
        while True:
            answer = await self._call(
                "GET",
                f"{self._messages}/api/chat/{session}/history?after={after}&limit={PAGE}",
                token,
            )
            if answer.status_code != 200:
                raise DependencyUnavailable(f"history answered {answer.status_code}")
            messages = msgspec.json.decode(answer.content)["messages"]
            messages.sort(key=lambda m: m["seq"])
            for message in messages:
                yield int(message["seq"]), msgspec.json.encode(message)
            if len(messages) < PAGE:
                return
            after = int(messages[-1]["seq"])

    async def mark(self, token: str, session: uuid.UUID, kind: str, up_to: int) -> int:
        answer = await self._call(
            "POST", f"{self._messages}/api/chat/{session}/{kind}", token, {"upToSeq": up_to}
        )
        return answer.status_code

    async def _call(
        self, method: str, url: str, token: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method, url, json=body, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(f"{url.split('/')[2]} unreachable: {exc}") from None
