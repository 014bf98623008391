"""The SEND pipe on its own (no socket, no message-svc): what waits goes together, in order,
one request at a time, and a connection cannot queue without bound."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any

from chat_common.dto import SendMessageRequest
from chat_common.tracing import TraceContext
from ws_edge.answers import Refused, SendAnswer, Stored
from ws_edge.sends import PendingSend, SendPipe


def pending(content: str) -> PendingSend:
    request = SendMessageRequest(
        session_id=uuid.uuid4(), content=content, client_message_id=uuid.uuid4()
    )
    return PendingSend(request, f"r-{content}", TraceContext())


class Store:
    """Answers each request after ``gate`` opens; refuses content starting with "no"."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, requests: list[SendMessageRequest]) -> list[SendAnswer]:
        self.requests.append([r.content or "" for r in requests])
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await self.gate.wait()
        self.in_flight -= 1
        return [
            Refused("NOT_PARTICIPANT", "no")
            if (r.content or "").startswith("no")
            else Stored((r.content or "").encode(), str(r.session_id), 1)
            for r in requests
        ]


class Pipe:
    def __init__(self, *, max_waiting: int = 1_000, batch_max: int = 100) -> None:
        self.store = Store()
        self.answers: list[tuple[str | None, SendAnswer]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.pipe = SendPipe(
            self.store, self.answer, self.spawn, max_waiting=max_waiting, batch_max=batch_max
        )

    async def answer(self, sent: PendingSend, answer: SendAnswer) -> None:
        self.answers.append((sent.receipt, answer))

    def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settled(self) -> None:
        async with asyncio.timeout(2):
            while self.tasks:
                await asyncio.gather(*self.tasks)


async def test_a_lone_send_goes_at_once_and_is_answered() -> None:
    p = Pipe()
    assert p.pipe.submit(pending("a"))
    await p.settled()
    assert p.store.requests == [["a"]]
    assert [(r, type(a)) for r, a in p.answers] == [("r-a", Stored)]


async def test_sends_waiting_behind_a_request_go_together_in_order() -> None:
    p = Pipe(batch_max=3)
    p.store.gate.clear()
    p.pipe.submit(pending("a"))
    await asyncio.sleep(0)  # the first request is out
    for c in ["b", "no-c", "d", "e"]:
        assert p.pipe.submit(pending(c))
    assert p.pipe.waiting == 4
    p.store.gate.set()
    await p.settled()
    assert p.store.requests == [["a"], ["b", "no-c", "d"], ["e"]]  # at most batch_max each
    assert p.store.most_in_flight == 1  # one request at a time per connection
    assert [r for r, _ in p.answers] == ["r-a", "r-b", "r-no-c", "r-d", "r-e"]  # in order
    assert isinstance(p.answers[2][1], Refused)  # its own answer, the others stored
    assert all(isinstance(a, Stored) for i, (_, a) in enumerate(p.answers) if i != 2)


async def test_too_many_waiting_sends_are_refused() -> None:
    p = Pipe(max_waiting=2)
    p.store.gate.clear()
    assert p.pipe.submit(pending("a"))
    await asyncio.sleep(0)  # out: no longer waiting
    assert p.pipe.submit(pending("b"))
    assert p.pipe.submit(pending("c"))
    assert not p.pipe.submit(pending("d"))
    p.store.gate.set()
    await p.settled()
    assert [r for r, _ in p.answers] == ["r-a", "r-b", "r-c"]
    assert p.pipe.submit(pending("e"))  # room again
    await p.settled()
    assert p.answers[-1][0] == "r-e"
