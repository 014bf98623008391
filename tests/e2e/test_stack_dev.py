"""`make dev`'s foreground mode: every part starts, and Ctrl-C stops them all."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT, Stack, port_base

pytestmark = pytest.mark.e2e


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def test_foreground_stack_starts_and_stops_on_ctrl_c(stack: Stack, tmp_path: Path) -> None:
    base = port_base(int(stack.gateway.rsplit(":", 1)[1]) + 100)
    env = {**stack.env, "RUN_DIR": str(tmp_path), "CHAT_PORT_BASE": str(base)}
    process = subprocess.Popen(
        [sys.executable, "scripts/stack.py", "dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        prefixes = set()
        for line in process.stdout:
            prefixes.add(line.split("|", 1)[0].strip())
            if line.startswith("ready:") or time.monotonic() > deadline:
                break
        assert {"flairbit", "session-svc", "message-svc", "gateway"} <= prefixes
        assert httpx.get(f"http://127.0.0.1:{base}/readyz", timeout=5).status_code == 200
        children = _children(process.pid)
        assert len(children) >= 4
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)  # drains the pipe while it stops
        assert process.returncode == 0
        for child in children:
            with pytest.raises(ProcessLookupError):
                os.kill(child, 0)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if process.stdout is not None:
            process.stdout.close()


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _gone(pid: int) -> bool:
    """Exited (a zombie, waiting to be reaped by whoever adopted it, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_make_dev_stops_everything_when_the_terminal_sends_ctrl_c(
    stack: Stack, tmp_path: Path
) -> None:
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group (make, the
    stack script and every service it started)."""
    base = port_base(int(stack.gateway.rsplit(":", 1)[1]) + 200)
    env = {**stack.env, "RUN_DIR": str(tmp_path), "CHAT_PORT_BASE": str(base)}
    process = subprocess.Popen(
        ["make", "--no-print-directory", "dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    started: list[int] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 90
        for line in process.stdout:
            if line.startswith("ready:") or time.monotonic() > deadline:
                break
        assert httpx.get(f"http://127.0.0.1:{base}/readyz", timeout=5).status_code == 200
        started = _descendants(process.pid)
        assert len(started) >= 5  # the stack script and its services
        os.killpg(process.pid, signal.SIGINT)
        process.communicate(timeout=30)
        deadline = time.monotonic() + 15
        while not all(_gone(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in started if not _gone(pid)] == []
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{base}/readyz", timeout=2)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        for pid in started:  # whatever outlived a failed check
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if process.stdout is not None:
            process.stdout.close()
