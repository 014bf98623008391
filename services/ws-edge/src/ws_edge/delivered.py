"""A connection's ACKs turned into delivered marks: coalesced per session
(:class:`~ws_edge.marks.DeliveredMarks`) and posted to message-svc a short while after the
first ACK of a batch (one request per session per batch), and what is left when the connection
closes. The posts outlive the connection (the edge drains them at shutdown)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from chat_common.errors import ChatError

from .marks import DeliveredMarks

log = logging.getLogger(__name__)


class MarkMover(Protocol):
    async def mark(self, token: str, session: uuid.UUID, kind: str, up_to: int) -> int: ...


class DeliveredPoster:
    def __init__(
        self,
        mover: MarkMover,
        token: Callable[[], str | None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        delay: float,
    ) -> None:
        self._mover = mover
        self._token = token  # the connection's token, once it has one
        self._spawn = spawn  # work that outlives the connection (Edge.spawn)
        self._delay = delay
        self._marks = DeliveredMarks()
        self._timer: asyncio.TimerHandle | None = None

    def note(self, destination: str, message_ids: Sequence[str]) -> None:
        """ACKed messages of ``destination``; the batch goes ``delay`` seconds after its first."""
        if self._marks.note(destination, message_ids) and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._due)

    def close(self) -> None:
        """The connection closes: post what is left now."""
        if self._timer is not None:
            self._timer.cancel()
        self._due()

    def _due(self) -> None:
        self._timer = None
        token = self._token()
        if self._marks and token is not None:
            self._spawn(self._post(token, self._marks.take()))

    async def _post(self, token: str, marks: dict[uuid.UUID, int]) -> None:
        for session, seq in marks.items():
            try:
                status = await self._mover.mark(token, session, "delivered", seq)
            except ChatError as exc:
                log.warning("delivered mark for %s not moved: %s", session, exc.detail)
                continue
            if status != 200:
                log.warning("delivered mark for %s refused (%s)", session, status)
