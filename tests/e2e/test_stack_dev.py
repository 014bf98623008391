"""`make dev`'s foreground mode: every part starts, and Ctrl-C stops them all."""

from __future__ import annotations

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
