"""Waiting on a condition in a test, instead of sleeping a fixed time and then looking.

A fixed sleep followed by an assertion is slow when the sleep is long and flaky when it is
short. :func:`eventually` polls the condition instead: it returns as soon as the condition
holds (a short poll keeps the test fast) and fails only after a generous deadline (the test
stays robust on a loaded machine). A sleep remains the right tool where the test proves that
something does *not* happen, or where the passing of time is the scenario itself.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

WITHIN = 10.0
"""The default deadline, in seconds: far beyond what any condition needs on a quiet machine."""

POLL = 0.01
"""The default pause between two looks, in seconds."""


@overload
async def eventually(
    check: Callable[[], Awaitable[T]], *, within: float = ..., poll: float = ..., what: str = ...
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T], *, within: float = ..., poll: float = ..., what: str = ...
) -> T: ...


async def eventually(
    check: Callable[[], object],
    *,
    within: float = WITHIN,
    poll: float = POLL,
    what: str = "",
) -> object:
    """Call ``check`` (a function, or a coroutine function) every ``poll`` seconds until it
    returns something truthy, and return that. Raise :class:`AssertionError`, naming ``what``
    (or ``check``) and its last answer, if that takes more than ``within`` seconds."""
    last: object = None
    try:
        async with asyncio.timeout(within):
            while True:
                last = check()
                if inspect.isawaitable(last):
                    last = await last
                if last:
                    return last
                await asyncio.sleep(poll)
    except TimeoutError:
        name = what or getattr(check, "__qualname__", repr(check))
        raise AssertionError(f"{name}: still {last!r} after {within} s") from None
