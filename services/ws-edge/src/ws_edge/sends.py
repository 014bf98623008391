"""A connection's ``/app/chat.send`` messages on their way to message-svc, pipelined.

The read loop hands each SEND to :meth:`SendPipe.submit` and goes on reading: it never waits
for a commit. One drain per connection takes what is waiting, up to ``batch_max`` at a time,
and hands it to ``store`` as one batch (the edge then sends it to message-svc together with
other connections' batches: :mod:`chat_common.grouping`); while that batch is out, new SENDs
wait and go together in the next one. So a connection's messages are stored, and answered, in
the order it sent them. Each SEND's answer
(stored, refused, or unanswered) goes to ``answer`` in order.

At most ``max_waiting`` SENDs wait per connection; :meth:`submit` refuses more (False).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from chat_common.dto import BULK_MAX, SendMessageRequest
from chat_common.tracing import TraceContext

from .answers import SendAnswer


@dataclass(frozen=True, slots=True)
class PendingSend:
    request: SendMessageRequest
    receipt: str | None
    trace: TraceContext  # the SEND's trace context, for the send queue if it comes to that


Store = Callable[[list[SendMessageRequest]], Awaitable[list[SendAnswer]]]
Answer = Callable[[PendingSend, SendAnswer], Awaitable[None]]
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class SendPipe:
    def __init__(
        self,
        store: Store,
        answer: Answer,
        spawn: Spawn,
        *,
        batch_max: int = BULK_MAX,
        max_waiting: int = 1_000,
    ) -> None:
        self._store = store
        self._answer = answer
        self._spawn = spawn
        self._batch_max = max(1, min(batch_max, BULK_MAX))
        self._max_waiting = max_waiting
        self._waiting: list[PendingSend] = []
        self._draining = False

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, pending: PendingSend) -> bool:
        """Queue a SEND; False (nothing queued) when too many wait already."""
        if len(self._waiting) >= self._max_waiting:
            return False
        self._waiting.append(pending)
        if not self._draining:
            self._draining = True
            self._spawn(self._drain())
        return True

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._batch_max]
                del self._waiting[: self._batch_max]
                answers = await self._store([p.request for p in batch])
                for pending, answer in zip(batch, answers, strict=True):
                    await self._answer(pending, answer)
        finally:
            self._draining = False
