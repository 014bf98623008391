"""One system measured at a series of offered rates: each step is a generator run with the CPU
of every process and PostgreSQL's counters read at the two ends of its measured window (after
the warm-up); then a search for the highest rate the system sustains.

The search (:func:`next_rate`, pure) starts from the highest of the always-measured rates that
was sustained, goes up by ``growth`` until a rate is not, then narrows the bracket between the
last sustained and the first failed rate geometrically until they are within ``precision``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import accounting
import cpu
import pgstats
from generator import Generator

CORES = os.cpu_count() or 1
HEADROOM = 0.75  # of the machine's CPU, for the projected capacity


@dataclass(frozen=True)
class Timing:
    warmup: float = 1.0
    seconds: float = 5.0
    drain: float = 3.0
    lead: float = 0.5  # from the command to the first scheduled send


@dataclass(frozen=True)
class System:
    """What is measured: its name, the roles whose CPU is the system's (everything but the
    generator), how to find every process, and its PostgreSQL counters if it has a database."""

    name: str
    roles: Callable[[], Mapping[int, str]]
    system_roles: tuple[str, ...]
    pg: Callable[[], Awaitable[pgstats.PgCounters]] | None = None
    labels: Mapping[str, str] | None = None  # extra keys of every row (send path, route)


async def _until(at: float) -> None:
    await asyncio.sleep(max(0.0, at - time.time()))


def merge(
    results: Iterable[Mapping[str, Any]],
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    sends: dict[str, list[Any]] = {k: [] for k in ("s", "n", "sched", "ack")}
    deliveries: dict[str, list[Any]] = {k: [] for k in ("r", "s", "n", "order", "at")}
    for result in results:
        for key, column in sends.items():
            column.extend(result["sends"][key])
        for key, column in deliveries.items():
            column.extend(result["deliveries"][key])
    return sends, deliveries


def receivers_of(generator: Generator) -> dict[int, list[int]]:
    return {
        s.index: [2 * s.index, 2 * s.index + 1] for p in generator.processes for s in p.sessions
    }


async def measure(
    generator: Generator, system: System, rate: float, timing: Timing
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    start_at = time.time() + timing.lead
    running = asyncio.create_task(
        generator.run(
            run_id,
            rate,
            warmup=timing.warmup,
            seconds=timing.seconds,
            drain=timing.drain,
            start_at=start_at,
        )
    )

    def roles() -> dict[int, str]:
        found = dict(system.roles())
        found.update(dict.fromkeys(generator.pids, "generator"))
        return found

    await _until(start_at + timing.warmup)
    cpu_before = cpu.sample(roles)
    pg_before = await system.pg() if system.pg else None
    await _until(start_at + timing.warmup + timing.seconds)
    cpu_after = cpu.sample(roles)
    pg_after = await system.pg() if system.pg else None
    results = await running
    sends, deliveries = merge(results)
    window = accounting.Window(timing.warmup * 1000, (timing.warmup + timing.seconds) * 1000)
    outcome = accounting.account(
        sends, deliveries, receivers_of(generator), rate=rate, window=window
    )
    usage = cpu.used(cpu_before, cpu_after)
    messages = outcome.delivered_messages_in_window
    system_ms = usage.total(system.system_roles)
    generator_ms = usage.total(("generator",))
    row: dict[str, Any] = {
        "system": system.name,
        **(system.labels or {}),
        **outcome.summary(),
        "cpu_ms_per_msg": cpu.per_message(usage, messages),
        "stack_cpu_ms_per_msg": _per(system_ms, messages),
        "gen_cpu_ms_per_msg": _per(generator_ms, messages),
        "machine_cpu_ms_per_msg": _per(usage.machine_busy_ms, messages),
        "steal_ms_per_msg": _per(usage.steal_ms, messages),
        "machine_busy_fraction": round(usage.machine_busy_ms / (CORES * 1000 * window.seconds), 3),
        "projected_capacity": projected(system_ms, messages),
        "gen_peak_in_flight": max((r["peakInFlight"] for r in results), default=0),
        "gen_cap_waits": sum(r["capWaits"] for r in results),
        "gen_unsent": sum(r["unsent"] for r in results),
        "gen_send_lag_p99_ms": _max_of(r["lagP99"] for r in results),
        "gen_errors": _errors(results),
    }
    if pg_before is not None and pg_after is not None:
        row.update(pgstats.per_message(pg_before, pg_after, messages))
    return row


def _per(ms: float, messages: float) -> float | None:
    return round(ms / messages, 3) if messages else None


def projected(system_ms: float, messages: float) -> float | None:
    """Messages per second the system could carry on this machine at ``HEADROOM`` of its
    cores, at the CPU per message it spent."""
    if not messages or system_ms <= 0:
        return None
    return round(HEADROOM * CORES * 1000 / (system_ms / messages))


def _max_of(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(max(present), 2) if present else None


def _errors(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for result in results:
        for kind, count in result["errors"].items():
            merged[kind] = merged.get(kind, 0) + count
    return merged


def next_rate(
    rows: Mapping[float, Mapping[str, Any]],
    *,
    growth: float,
    precision: float,
    ceiling: float,
) -> float | None:
    """The next rate to measure in the search for the highest sustained rate, or None."""
    good = [r for r, row in rows.items() if accounting.keeps_up(row)]
    if not good:
        return None
    low = max(good)
    above = [r for r, row in rows.items() if r > low and not accounting.keeps_up(row)]
    if not above:
        candidate = low * growth
        return _round(candidate) if candidate <= ceiling else None
    high = min(above)
    if high / low <= precision:
        return None
    candidate = _round(math.sqrt(low * high))
    return candidate if low < candidate < high else None


def _round(rate: float) -> float:
    """A rate to two significant figures (150, 220, 3400)."""
    if rate < 100:
        return float(round(rate))
    magnitude = 10 ** (math.floor(math.log10(rate)) - 1)
    return float(round(rate / magnitude) * magnitude)


def _machine() -> cpu.MachineTicks:
    return cpu.machine_ticks(Path("/proc/stat").read_text())


async def settle(max_seconds: float = 30.0, busy_below: float = 0.25) -> None:
    """Wait until the machine is nearly idle again (a backlog from an overloaded step drained)."""
    deadline = time.monotonic() + max_seconds
    previous = _machine()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        current = _machine()
        total = current.total - previous.total
        if total > 0 and (current.busy - previous.busy) / total < busy_below:
            return
        previous = current


def connections_lost(row: Mapping[str, Any]) -> bool:
    """The step lost generator connections (the system closed them): later steps need new
    ones."""
    return any(kind.startswith(("receiver", "sender")) for kind in row["gen_errors"])


async def sweep(
    open_generator: Callable[[], contextlib.AbstractAsyncContextManager[Generator]],
    system: System,
    rates: list[float],
    timing: Timing,
    *,
    growth: float = 1.5,
    precision: float = 1.25,
    ceiling: float = 50_000,
    max_steps: int = 14,
) -> list[dict[str, Any]]:
    rows: dict[float, dict[str, Any]] = {}
    async with contextlib.AsyncExitStack() as stack:
        generator = await stack.enter_async_context(open_generator())

        async def step(rate: float) -> None:
            nonlocal generator
            await settle()
            row = await measure(generator, system, rate, timing)
            rows[rate] = row
            if connections_lost(row):  # the next step starts with every connection open
                await stack.aclose()
                generator = await stack.enter_async_context(open_generator())
            print(
                f"  {system.name:<20} {rate:>7.0f}/s -> {row['delivered_msgs_per_s']:>8}/s"
                f"  p50 {row['p50_ms']} p99 {row['p99_ms']} ms  lost {row['lost']}"
                f"  cpu/msg {row['stack_cpu_ms_per_msg']} (gen {row['gen_cpu_ms_per_msg']}) ms"
                f"{'' if accounting.keeps_up(row) else '  (behind)'}"
                f"{'  generator connections lost: reopened' if connections_lost(row) else ''}",
                flush=True,
            )

        for rate in rates:
            await step(rate)
        for _ in range(max_steps):
            following = next_rate(rows, growth=growth, precision=precision, ceiling=ceiling)
            if following is None or following in rows:
                break
            await step(following)
    return [rows[r] for r in sorted(rows)]


def highest_sustained(rows: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    good = [r for r in rows if accounting.keeps_up(r)]
    return max(good, key=lambda r: r["offered_rate"]) if good else None
