"""chat_testing.waiting: returns as soon as the condition holds, fails naming it after the
deadline."""

from __future__ import annotations

import asyncio

import pytest

from chat_testing.waiting import eventually


async def test_returns_the_first_truthy_answer_without_waiting_the_deadline() -> None:
    answers = iter([0, [], {"done": True}])
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await eventually(lambda: next(answers), within=60, poll=0.001) == {"done": True}
    assert loop.time() - started < 30  # bounded: returned on the condition, not the deadline


async def test_awaits_a_coroutine_function() -> None:
    calls = 0

    async def third_time() -> int:
        nonlocal calls
        calls += 1
        return calls if calls >= 3 else 0

    assert await eventually(third_time, poll=0.001) == 3


async def test_the_condition_set_by_another_task_is_seen() -> None:
    state: dict[str, bool] = {}

    async def later() -> None:
        await asyncio.sleep(0.02)
        state["done"] = True

    task = asyncio.create_task(later())
    assert await eventually(lambda: state.get("done")) is True
    await task


async def test_fails_after_the_deadline_naming_the_condition_and_its_last_answer() -> None:
    def never() -> None:
        return None

    delivered: list[int] = []
    with pytest.raises(AssertionError, match=r"a delivery: still \[\] after 0\.05 s"):
        await eventually(lambda: delivered, within=0.05, what="a delivery")
    with pytest.raises(AssertionError, match=r"never: still None after 0\.05 s"):
        await eventually(never, within=0.05)


async def test_a_check_that_hangs_is_cut_at_the_deadline() -> None:
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    with pytest.raises(AssertionError, match="hangs"):
        await eventually(hangs, within=0.05)
