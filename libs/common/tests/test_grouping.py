"""Merging many callers' sends into few requests, on its own (no message-svc): a lone send
goes at once, what arrives while requests are out goes together, the caps split requests, and
every message is answered whatever the request does."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from chat_common.grouping import Group, GroupBatcher


def sends(*contents: str) -> list[str]:
    return list(contents)


@dataclass(frozen=True)
class Stored:
    body: bytes


@dataclass(frozen=True)
class Unanswered:
    detail: str


Answer = Stored | Unanswered


class Groups:
    """Stores every group after ``gate`` opens, recording each request as (token, contents)."""

    def __init__(self) -> None:
        self.requests: list[list[tuple[str, list[str]]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: BaseException | None = None
        self.short = False

    async def __call__(self, groups: list[Group[str, str]]) -> list[list[Answer]]:
        self.requests.append([(token, list(ms)) for token, ms in groups])
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        answers: list[list[Answer]] = [
            [Stored(f"{token}:{m}".encode()) for m in ms] for token, ms in groups
        ]
        return answers[:-1] if self.short else answers


def failed(exc: BaseException) -> Answer:
    return Unanswered(type(exc).__name__)


def bodies(answers: list[Answer]) -> list[bytes]:
    return [a.body for a in answers if isinstance(a, Stored)]


async def test_a_lone_send_goes_at_once_alone() -> None:
    groups = Groups()
    batcher = GroupBatcher(groups, failed)
    assert bodies(await batcher.store("alice", sends("hi"))) == [b"alice:hi"]
    assert groups.requests == [[("alice", ["hi"])]]


async def test_what_arrives_while_requests_are_out_goes_together_in_arrival_order() -> None:
    groups = Groups()
    groups.gate.clear()
    batcher = GroupBatcher(groups, failed, max_in_flight=2)
    first = asyncio.create_task(batcher.store("a", sends("a1")))
    second = asyncio.create_task(batcher.store("b", sends("b1")))
    await asyncio.sleep(0)
    assert batcher.in_flight == 2
    later = [
        asyncio.create_task(batcher.store(token, sends(f"{token}1", f"{token}2")))
        for token in ("c", "d", "e")
    ]
    await asyncio.sleep(0)
    assert len(groups.requests) == 2  # both slots taken: the rest waits
    groups.gate.set()
    answers = await asyncio.gather(first, second, *later)
    assert groups.requests == [
        [("a", ["a1"])],
        [("b", ["b1"])],
        [("c", ["c1", "c2"]), ("d", ["d1", "d2"]), ("e", ["e1", "e2"])],
    ]
    assert bodies(answers[3]) == [b"d:d1", b"d:d2"]  # each caller gets its own answers


@pytest.mark.parametrize(
    ("max_groups", "max_messages", "expected"),
    [
        (2, 1_000, [["a"], ["b", "c"], ["d"]]),
        (100, 5, [["a"], ["b", "c"], ["d"]]),  # b+c = 4, +d would be 6
        (100, 3, [["a"], ["b"], ["c", "d"]]),  # b fills a request on its own
    ],
)
async def test_the_caps_split_requests(
    max_groups: int, max_messages: int, expected: list[list[str]]
) -> None:
    groups = Groups()
    groups.gate.clear()
    batcher = GroupBatcher(
        groups, failed, max_in_flight=1, max_groups=max_groups, max_messages=max_messages
    )
    sizes = {"a": 1, "b": 2, "c": 2, "d": 2}
    if max_messages == 3:
        sizes = {"a": 1, "b": 3, "c": 1, "d": 2}
    tasks = [asyncio.create_task(batcher.store(t, sends(*[t] * n))) for t, n in sizes.items()]
    await asyncio.sleep(0)
    groups.gate.set()
    await asyncio.gather(*tasks)
    assert [[token for token, _ in request] for request in groups.requests] == expected


async def test_a_caller_gone_before_its_batch_went_is_left_out() -> None:
    groups = Groups()
    groups.gate.clear()
    batcher = GroupBatcher(groups, failed, max_in_flight=1)
    out = asyncio.create_task(batcher.store("a", sends("a1")))
    await asyncio.sleep(0)
    gone = asyncio.create_task(batcher.store("b", sends("b1")))
    kept = asyncio.create_task(batcher.store("c", sends("c1")))
    await asyncio.sleep(0)
    gone.cancel()
    out.cancel()  # already sent: stored whatever the caller does
    groups.gate.set()
    assert bodies(await kept) == [b"c:c1"]
    assert groups.requests == [[("a", ["a1"])], [("c", ["c1"])]]


@pytest.mark.parametrize("fault", ["raises", "short answer"])
async def test_a_request_that_fails_answers_every_send_of_it(fault: str) -> None:
    groups = Groups()
    if fault == "raises":
        groups.fail = ConnectionResetError()
    else:
        groups.short = True
    batcher = GroupBatcher(groups, failed, max_in_flight=1)
    groups.gate.clear()
    first = asyncio.create_task(batcher.store("a", sends("a1")))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(batcher.store(t, sends("x", "y"))) for t in ("b", "c")]
    await asyncio.sleep(0)
    groups.gate.set()
    answers = await asyncio.gather(first, *rest)
    assert [len(a) for a in answers] == [1, 2, 2]
    for answer in answers:
        assert all(isinstance(a, Unanswered) for a in answer)
    # the next request goes as usual
    groups.fail, groups.short = None, False
    assert bodies(await batcher.store("d", sends("d1"))) == [b"d:d1"]


async def test_close_waits_for_the_requests_under_way() -> None:
    groups = Groups()
    groups.gate.clear()
    batcher = GroupBatcher(groups, failed)
    task = asyncio.create_task(batcher.store("a", sends("a1")))
    await asyncio.sleep(0)
    closing = asyncio.create_task(batcher.close())
    await asyncio.sleep(0.01)  # a negative check: time enough for close() to return wrongly
    assert not closing.done()
    groups.gate.set()
    await closing
    assert task.done()


async def test_a_caller_out_of_time_before_its_group_went_takes_it_out() -> None:
    groups = Groups()
    groups.gate.clear()
    batcher = GroupBatcher(groups, failed, max_in_flight=1)
    held = asyncio.create_task(batcher.store("a", sends("a1")))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):  # waits behind "a": too long
            await batcher.store("b", sends("b1"))
    groups.gate.set()
    assert bodies(await held) == [b"a:a1"]
    await batcher.close()
    assert groups.requests == [[("a", ["a1"])]]  # "b" never went
