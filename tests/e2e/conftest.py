"""The whole stack started with `make up` on its own ports, run dir and database."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
# Per pytest process, so that stacks started side by side never share a database or vhost.
E2E_DATABASE_URL = os.environ.get(
    "E2E_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/chat_e2e_{os.getpid()}"
)
E2E_AMQP_VHOST = os.environ.get("E2E_AMQP_VHOST", f"chat_e2e_{os.getpid()}")


def _ports_free(base: int, count: int = 11) -> bool:
    for port in range(base, base + count):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def port_base(start: int = 18080) -> int:
    for base in range(start, 30000, 100):
        if _ports_free(base):
            return base
    raise RuntimeError("no free block of ports for the e2e stack")


@dataclass(frozen=True)
class Stack:
    gateway: str
    session_svc: str
    flairbit: str
    env: dict[str, str]
    run_dir: Path

    def make(self, target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", target],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def token(self, email: str) -> str:
        answer = httpx.post(f"{self.flairbit}/dev/token", json={"email": email}, timeout=5)
        answer.raise_for_status()
        return str(answer.json()["token"])

    def pids(self) -> list[int]:
        return [int(p.read_text()) for p in (self.run_dir / "pids").glob("*.pid")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    name = E2E_DATABASE_URL.rsplit("/", 1)[1]
    admin = E2E_DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    base = port_base()
    run_dir = tmp_path_factory.mktemp("stack")
    env = {
        **os.environ,
        "RUN_DIR": str(run_dir),
        "CHAT_PORT_BASE": str(base),
        "DATABASE_URL": E2E_DATABASE_URL,
        "AMQP_VHOST": E2E_AMQP_VHOST,
    }
    stack = Stack(
        f"http://127.0.0.1:{base}",
        f"http://127.0.0.1:{base + 1}",
        f"http://127.0.0.1:{base + 10}",
        env,
        run_dir,
    )
    started = stack.make("up")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield stack
    finally:
        pids = stack.pids()
        stopped = stack.make("down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        left = [pid for pid in pids if _alive(pid)]
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        ctl = shutil.which("rabbitmqctl")
        if ctl:
            subprocess.run([ctl, "-q", "delete_vhost", E2E_AMQP_VHOST], check=False, timeout=60)
        assert not left, f"make down left processes behind: {left}"
