"""The whole stack started with ``make up`` on its own ports, run dir, database and RabbitMQ
virtual host, for suites that drive it from outside (e2e, browser); stopped and cleaned up
after, with a check that ``make down`` left no process behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[4]


def _ports_free(base: int, count: int = 11) -> bool:
    for port in range(base, base + count):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def port_base(start: int = 18080) -> int:
    """The first block of 11 free ports from ``start`` (in steps of 100)."""
    for base in range(start, 30000, 100):
        if _ports_free(base):
            return base
    raise RuntimeError("no free block of ports for a stack")


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

    def api(self, email: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.gateway,
            headers={"Authorization": f"Bearer {self.token(email)}"},
            timeout=10,
        )

    def pids(self) -> list[int]:
        return [int(p.read_text()) for p in (self.run_dir / "pids").glob("*.pid")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _delete_vhost(vhost: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl:
        subprocess.run(
            [ctl, "-q", "delete_vhost", vhost], capture_output=True, check=False, timeout=60
        )


@contextlib.contextmanager
def running_stack(
    run_dir: Path, *, database_url: str, vhost: str, first_port: int
) -> Iterator[Stack]:
    _drop_database(database_url)
    _delete_vhost(vhost)  # `make up` creates it afresh: no queue left from an earlier run
    base = port_base(first_port)
    env = {
        **os.environ,
        "RUN_DIR": str(run_dir),
        "CHAT_PORT_BASE": str(base),
        "DATABASE_URL": database_url,
        "AMQP_VHOST": vhost,
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
        left = [pid for pid in pids if _alive(pid)]
        _drop_database(database_url)
        _delete_vhost(vhost)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not left, f"make down left processes behind: {left}"
