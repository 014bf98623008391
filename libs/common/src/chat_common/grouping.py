"""Sends of many callers on their way to message-svc, merged into few requests.

Callers (ws-edge's connections, the gateway's ``POST /api/chat/message`` requests) each hand
over one sender's messages with what names the sender (the token, a request id, the trace
context: ``S``); :class:`GroupBatcher` keeps at most
``max_in_flight`` requests out at once and sends whatever arrived while they were out together
in the next one, each caller's messages as a group (message-svc's ``POST /internal/sends``).
So at light load a send goes at once, alone, and under load one request carries many senders'
messages: one HTTP exchange instead of one each, on both sides. A request carries at most
``max_groups`` groups and ``max_messages`` messages; a group that would not fit waits for the
next.

A caller that stops waiting (its connection closed) before its group went is left out of the
request; once the group went, it is stored whatever the caller does, as a request already
sent would be. A request that fails as a whole answers each of its messages with
``failed(exc)``, and one that answers a group with the wrong number of answers does the same
for that group: no caller waits for ever. The requests run outside any caller's context
(a request made for many callers belongs to none of them): what a caller's trace or logs need
travels with its sender, ``S``.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

S = TypeVar("S")  # who sends: the token and what else goes with one sender's group
M = TypeVar("M")  # a message as the caller has it
A = TypeVar("A")  # the answer to one message

Group = tuple[S, list[M]]  # a sender and its messages, in order


@dataclass(frozen=True, slots=True)
class Sender:
    """A sender as message-svc's grouped send names it: the user's own token, and the request
    id and W3C trace context (traceparent, tracestate) of the caller's request, so that its
    group is logged and traced as the caller's."""

    token: str
    request_id: str | None = None
    trace: dict[str, str] | None = None


@dataclass(slots=True)
class _Waiting(Generic[S, M, A]):
    group: Group[S, M]
    answer: asyncio.Future[list[A]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupBatcher(Generic[S, M, A]):
    def __init__(
        self,
        store: Callable[[list[Group[S, M]]], Awaitable[list[list[A]]]],
        failed: Callable[[BaseException], A],
        *,
        max_in_flight: int = 2,
        max_groups: int = 100,
        max_messages: int = 1_000,
    ) -> None:
        self._store = store
        self._failed = failed
        self._max_in_flight = max(1, max_in_flight)
        self._max_groups = max(1, max_groups)
        self._max_messages = max(1, max_messages)
        self._waiting: list[_Waiting[S, M, A]] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def store(self, sender: S, messages: list[M]) -> list[A]:
        """Store one sender's messages: an answer each, in order. A caller that stops waiting
        (cancelled, out of time) before its group went takes it out: it never goes."""
        waiting: _Waiting[S, M, A] = _Waiting((sender, messages))
        self._waiting.append(waiting)
        self._start()
        return await waiting.answer  # cancelling the caller cancels this future

    async def close(self) -> None:
        """Wait for the requests under way (what still waits has no one to send it)."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _start(self) -> None:
        while len(self._in_flight) < self._max_in_flight:
            batch = self._take()
            if not batch:
                return
            task = asyncio.create_task(self._send(batch), context=contextvars.Context())
            self._in_flight.add(task)
            task.add_done_callback(self._done)

    def _take(self) -> list[_Waiting[S, M, A]]:
        """The next request's groups, in arrival order; the callers gone are dropped."""
        self._waiting = [w for w in self._waiting if not w.answer.done()]
        batch: list[_Waiting[S, M, A]] = []
        messages = 0
        for waiting in self._waiting:
            size = len(waiting.group[1])
            if batch and (len(batch) == self._max_groups or messages + size > self._max_messages):
                break
            batch.append(waiting)
            messages += size
        del self._waiting[: len(batch)]
        return batch

    async def _send(self, batch: list[_Waiting[S, M, A]]) -> None:
        answers: list[list[A]] | None = None
        error: BaseException = RuntimeError("the request to store SENDs did not finish")
        try:
            answers = await self._store([w.group for w in batch])
            if len(answers) != len(batch):
                answers, error = None, RuntimeError("the answer does not match the request")
        except Exception as exc:  # whatever it was, every SEND of the request is answered
            error = exc
        finally:  # also when cancelled: no caller waits for ever
            for index, waiting in enumerate(batch):
                if waiting.answer.done():
                    continue
                answer = answers[index] if answers is not None else None
                if answer is None or len(answer) != len(waiting.group[1]):
                    answer = [self._failed(error)] * len(waiting.group[1])
                waiting.answer.set_result(answer)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._start()
