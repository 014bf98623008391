"""CPU time by process role, read from ``/proc`` around a measured window.

Roles: each service of the stack (by the pids ``make up`` recorded), ``postgres`` (every
process of the PostgreSQL cluster: postmaster, backends, background workers), ``rabbitmq``
(the Erlang VM and its helpers), ``redis``, ``generator`` (the load generator's processes),
plus the machine's own counters from ``/proc/stat``: busy time of every CPU and steal time (what
the hypervisor gave to other guests).

A process seen at both ends of the window counts what it used between them; one that started
inside the window counts all it used; one that ended inside it is missed (the pools in the
stack keep their processes for the run). The parsing functions are pure; :func:`sample` reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")

# Process names (``/proc/<pid>/comm``) of the shared servers, by role.
SERVER_COMMS: dict[str, str] = {
    "postgres": "postgres",
    "beam.smp": "rabbitmq",
    "erl_child_setup": "rabbitmq",
    "epmd": "rabbitmq",
    "inet_gethost": "rabbitmq",
    "redis-server": "redis",
}


def process_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from the text of ``/proc/<pid>/stat``."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted from 1


@dataclass(frozen=True)
class MachineTicks:
    busy: int  # user + nice + system + irq + softirq, all CPUs
    steal: int
    total: int


def machine_ticks(stat: str) -> MachineTicks:
    """The aggregate ``cpu`` line of ``/proc/stat``."""
    values = [int(v) for v in stat.splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    # guest time is already inside user time
    return MachineTicks(user + nice + system + irq + softirq, steal, sum(values[:8]))


@dataclass(frozen=True)
class Sample:
    ticks: dict[int, tuple[str, int]]  # pid -> (role, ticks)
    machine: MachineTicks


@dataclass(frozen=True)
class Usage:
    """CPU ms used in a window, by role, and the machine's busy and steal ms."""

    by_role: dict[str, float] = field(default_factory=dict)
    machine_busy_ms: float = 0.0
    steal_ms: float = 0.0

    def total(self, roles: Iterable[str]) -> float:
        return sum(self.by_role.get(r, 0.0) for r in roles)


def used(before: Sample, after: Sample) -> Usage:
    by_role: dict[str, float] = {}
    for pid, (role, ticks) in after.ticks.items():
        start = before.ticks.get(pid)
        delta = ticks - (start[1] if start is not None and start[0] == role else 0)
        by_role[role] = by_role.get(role, 0.0) + max(0, delta) * TICK_MS
    return Usage(
        by_role,
        (after.machine.busy - before.machine.busy) * TICK_MS,
        (after.machine.steal - before.machine.steal) * TICK_MS,
    )


def per_message(usage: Usage, messages: float) -> dict[str, float | None]:
    """CPU ms per message for each role (None when nothing was delivered)."""
    return {
        role: (round(ms / messages, 3) if messages else None)
        for role, ms in sorted(usage.by_role.items())
    }


Roles = Callable[[], Mapping[int, str]]


def server_processes(proc: Path = Path("/proc")) -> dict[int, str]:
    """The shared servers' processes on this machine: pid -> role."""
    found: dict[int, str] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        role = SERVER_COMMS.get(comm)
        if role is not None:
            found[int(entry.name)] = role
    return found


def pid_files(run_dir: Path) -> dict[int, str]:
    """The stack's services from the pid files ``make up`` wrote: pid -> service label."""
    found: dict[int, str] = {}
    for path in (run_dir / "pids").glob("*.pid"):
        try:
            found[int(path.read_text().strip())] = path.stem
        except (OSError, ValueError):
            continue
    return found


def sample(roles: Roles, proc: Path = Path("/proc")) -> Sample:
    ticks: dict[int, tuple[str, int]] = {}
    for pid, role in roles().items():
        try:
            ticks[pid] = (role, process_ticks((proc / str(pid) / "stat").read_text()))
        except (OSError, IndexError, ValueError):
            continue
    return Sample(ticks, machine_ticks((proc / "stat").read_text()))
