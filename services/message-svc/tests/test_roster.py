"""The roster (cached participants): entries live their TTL, a session told changed is read
again at once, and a load that was under way when its session changed is not kept."""

from __future__ import annotations

import asyncio
import uuid

from message_svc.repository import Member
from message_svc.roster import Roster

S = uuid.uuid4()


def member(email: str) -> Member:
    return Member(S, "dating", uuid.uuid4(), email, email, 0, 0)


class Loader:
    def __init__(self) -> None:
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, session: uuid.UUID) -> list[Member]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return [member("a@example.com"), member("b@example.com")]


async def test_forget_reads_the_session_again() -> None:
    now = [0.0]
    load = Loader()
    roster = Roster(load, ttl=10.0, clock=lambda: now[0])
    await roster.members(S)
    await roster.members(S)
    assert load.calls == 1  # cached
    roster.forget(S)
    await roster.members(S)
    assert load.calls == 2
    roster.forget_all()
    await roster.members(S)
    assert load.calls == 3
    now[0] = 11.0  # past the TTL, even untold
    await roster.members(S)
    assert load.calls == 4


async def test_a_load_under_way_when_forgotten_answers_but_is_not_kept() -> None:
    load = Loader()
    load.gate = asyncio.Event()
    roster = Roster(load, ttl=10.0)
    first = asyncio.create_task(roster.members(S))
    await asyncio.sleep(0)
    roster.forget(S)  # the block committed while the old state was being read
    load.gate.set()
    assert len(await first) == 2
    load.gate = None
    await roster.members(S)
    assert load.calls == 2  # read again, not served from the stale load
