"""SENDs of many connections on their way to message-svc, merged into few requests.

Each connection hands its SENDs over in order, one batch at a time (:mod:`ws_edge.sends`);
this merges the batches of all connections of the edge: at most ``max_in_flight`` requests are
out at once, and whatever arrives while they are goes together in the next one, each sender's
batch as a group with its own token (``POST /internal/sends``). So at light load a SEND goes at
once, alone, and under load the edge pays for one request per many SENDs instead of one each,
and so does message-svc. A request carries at most ``max_groups`` groups and ``max_messages``
messages; a batch that would not fit waits for the next.

A caller that stops waiting (its connection closed) before its batch went is left out of the
request; once the batch went, it is stored whatever the caller does, as a request already
sent would be. A request that fails as a whole answers each of its SENDs with ``failed(exc)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from chat_common.dto import SendMessageRequest

from .answers import SendAnswer

Group = tuple[str, list[SendMessageRequest]]  # a sender's token and messages, in order
StoreGroups = Callable[[list[Group]], Awaitable[list[list[SendAnswer]]]]


@dataclass(slots=True)
class _Waiting:
    group: Group
    answer: asyncio.Future[list[SendAnswer]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class SendBatcher:
    def __init__(
        self,
        store: StoreGroups,
        failed: Callable[[BaseException], SendAnswer],
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
        self._waiting: list[_Waiting] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def store(self, token: str, requests: list[SendMessageRequest]) -> list[SendAnswer]:
        """Store one sender's messages (at most ``max_messages``): an answer each, in order."""
        waiting = _Waiting((token, requests))
        self._waiting.append(waiting)
        self._start()
        return await waiting.answer

    async def close(self) -> None:
        """Wait for the requests under way (what still waits has no one to send it)."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _start(self) -> None:
        while len(self._in_flight) < self._max_in_flight:
            batch = self._take()
            if not batch:
                return
            task = asyncio.create_task(self._send(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._done)

    def _take(self) -> list[_Waiting]:
        """The next request's groups, in arrival order; the callers gone are dropped."""
        self._waiting = [w for w in self._waiting if not w.answer.done()]
        batch: list[_Waiting] = []
        messages = 0
        for waiting in self._waiting:
            size = len(waiting.group[1])
            if batch and (len(batch) == self._max_groups or messages + size > self._max_messages):
                break
            batch.append(waiting)
            messages += size
        del self._waiting[: len(batch)]
        return batch

    async def _send(self, batch: list[_Waiting]) -> None:
        answers: list[list[SendAnswer]] | None = None
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
