"""The load generator's processes, driven from Python: start (connections opened, subscribed),
run a rate step, stop. The generator itself is ``bench/gen/gen.mjs`` (Node.js); several
processes split the sessions between them, each with its share of the rate, all on one
schedule (the same start time)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GEN_DIR = Path(__file__).resolve().parent / "gen"
READY_SECONDS = 120.0


def install() -> Path:
    """Node.js, and the generator's packages (``npm ci``) when missing; node's path."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError("the load generator needs Node.js and npm: apt-get install nodejs npm")
    if (
        not (GEN_DIR / "node_modules" / "ws").exists()
        or not (GEN_DIR / "node_modules" / "undici").exists()
    ):
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=GEN_DIR, check=True, timeout=300
        )
    return Path(node)


@dataclass(frozen=True)
class SessionSpec:
    index: int  # global across processes: the receivers are 2 * index and 2 * index + 1
    destination: str
    id: str = ""  # the stack's sessionId
    tokens: tuple[str, str] = ("", "")

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "destination": self.destination,
            "id": self.id,
            "tokens": list(self.tokens),
        }


@dataclass
class Process:
    proc: asyncio.subprocess.Process
    sessions: list[SessionSpec]
    stderr: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def line(self, within: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(within):
            raw = await self.proc.stdout.readline()
        if not raw:
            raise RuntimeError(f"the generator ended: {''.join(self.stderr)[-2000:]}")
        value = json.loads(raw)
        assert isinstance(value, dict)
        return value

    async def command(self, value: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(value).encode() + b"\n")
        await self.proc.stdin.drain()


class Generator:
    """``processes`` generator processes sharing ``sessions``."""

    def __init__(self, processes: list[Process]) -> None:
        self.processes = processes

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    async def run(
        self,
        run_id: str,
        rate: float,
        *,
        warmup: float,
        seconds: float,
        drain: float,
        start_at: float,
    ) -> list[dict[str, Any]]:
        """One step; ``start_at`` is epoch seconds. The raw result of each process."""
        share = rate / len(self.processes)
        for process in self.processes:
            await process.command(
                {
                    "cmd": "run",
                    "run": run_id,
                    "rate": share,
                    "warmup": warmup,
                    "seconds": seconds,
                    "drain": drain,
                    "startAt": start_at * 1000,
                }
            )
        budget = max(0.0, start_at - time.time()) + warmup + seconds + drain + 30
        return await asyncio.gather(*(p.line(budget) for p in self.processes))


async def _drain_stderr(process: Process) -> None:
    assert process.proc.stderr is not None
    async for raw in process.proc.stderr:
        process.stderr.append(raw.decode(errors="replace"))
        del process.stderr[:-50]


@contextlib.asynccontextmanager
async def started(
    mode: str,
    sessions: Sequence[SessionSpec],
    *,
    ws_url: str,
    http_url: str = "",
    connect_headers: Sequence[tuple[str, str]] = (),
    processes: int = 1,
    in_flight_cap: int = 20_000,
) -> AsyncIterator[Generator]:
    """Generator processes with every connection open and subscribed; stopped on exit."""
    node = install()
    count = max(1, min(processes, len(sessions)))
    shares = [list(sessions[i::count]) for i in range(count)]
    running: list[Process] = []
    tasks: list[asyncio.Task[None]] = []
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        try:
            for i, share in enumerate(shares):
                config_file = Path(tmp) / f"gen-{i}.json"
                config_file.write_text(
                    json.dumps(
                        {
                            "mode": mode,
                            "wsUrl": ws_url,
                            "httpUrl": http_url,
                            "connectHeaders": [list(h) for h in connect_headers],
                            "sessions": [s.as_json() for s in share],
                            "inFlightCap": in_flight_cap,
                        }
                    )
                )
                proc = await asyncio.create_subprocess_exec(
                    str(node),
                    str(GEN_DIR / "gen.mjs"),
                    str(config_file),
                    cwd=GEN_DIR,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    limit=1 << 30,  # a result is one long line
                )
                process = Process(proc, share)
                running.append(process)
                tasks.append(asyncio.create_task(_drain_stderr(process)))
            for process in running:
                ready = await process.line(READY_SECONDS)
                if ready.get("event") != "ready":
                    raise RuntimeError(f"the generator did not start: {ready}")
            yield Generator(running)
        finally:
            for process in running:
                with contextlib.suppress(Exception):
                    await process.command({"cmd": "quit"})
            for process in running:
                try:
                    async with asyncio.timeout(10):
                        await process.proc.wait()
                except TimeoutError:
                    process.proc.kill()
                    await process.proc.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
