"""The whole stack started with ``make up`` on its own ports, run dir, database and RabbitMQ
virtual host, for suites that drive it from outside (e2e, browser); stopped and cleaned up
after, with a check that ``make down`` left no process behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from chat_common import broker_access

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

    @property
    def message_svc(self) -> str:
        return f"http://127.0.0.1:{self.port_base + 2}"

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
        return list(self.pid_map().values())

    def pid_map(self) -> dict[str, int]:
        """Every recorded pid by its service label (``ws-edge``, ``ws-edge.2``, ...)."""
        return {p.stem: int(p.read_text()) for p in (self.run_dir / "pids").glob("*.pid")}

    # ---- one service at a time (fault injection) ------------------------------------------

    @property
    def port_base(self) -> int:
        return int(self.env["CHAT_PORT_BASE"])

    def pid(self, service: str, instance: int = 1) -> int | None:
        """The recorded pid of a service (``ws-edge``, ``outbox-relay``, ...), if any."""
        label = service if instance == 1 else f"{service}.{instance}"
        try:
            return int((self.run_dir / "pids" / f"{label}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def signal(self, service: str, signum: signal.Signals, instance: int = 1) -> int:
        """Send ``signum`` to the process the stack recorded for ``service``; its pid."""
        pid = self.pid(service, instance)
        assert pid is not None, f"no pid recorded for {service} (instance {instance})"
        os.kill(pid, signum)
        return pid

    def stack_script(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``scripts/stack.py ARGS`` with this stack's environment (run dir, ports, vhost)."""
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "stack.py"), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )

    def start_service(self, service: str, instance: int = 1) -> None:
        """Start one service again (after a kill) with the stack's environment; returns once
        its /healthz answers."""
        started = self.stack_script("start", service, str(instance))
        assert started.returncode == 0, started.stdout + started.stderr

    def stop_service(self, service: str, instance: int = 1) -> None:
        stopped = self.stack_script("stop", service, str(instance))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def _alive(pid: int) -> bool:
    """Runs (a zombie, exited and waiting to be reaped, does not count)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # ProcessLookupError included
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _delete_vhost(vhost: str) -> None:
    """The stack's virtual host and the users `make up` made for its services."""
    ctl = shutil.which("rabbitmqctl")
    if ctl:
        users = (broker_access.user_name(service, vhost) for service in broker_access.GRANTS)
        for args in (["delete_vhost", vhost], *(["delete_user", user] for user in users)):
            subprocess.run([ctl, "-q", *args], capture_output=True, check=False, timeout=60)


@contextlib.contextmanager
def running_stack(
    run_dir: Path,
    *,
    database_url: str,
    vhost: str,
    first_port: int,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """``extra_env`` reaches every process of the stack (e.g. shorter timeouts)."""
    _drop_database(database_url)
    _delete_vhost(vhost)  # `make up` creates it afresh: no queue left from an earlier run
    base = port_base(first_port)
    env = {
        **os.environ,
        **(extra_env or {}),
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
