"""A Docker engine to talk to: DOCKER_HOST's, the machine's default one, or this checkout's own
dockerd, started where none answers (as root, with Debian's docker.io) and stopped by its pid.

Errors::

    ContainersError
     +-- EngineUnavailable   no engine answers and none can be started here
     +-- BuildFailed         an image did not build (chat_testing.containers)
     +-- StackUnhealthy      a compose service did not become healthy (chat_testing.compose_stack)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

ROOT = Path(__file__).resolve().parents[4]
RUN_DIR = ROOT / ".run" / "docker"  # the private engine's data and log, inside the checkout


Log = Callable[[str], None]


class ContainersError(Exception):
    """Something about images, the engine or the compose stack went wrong."""


class EngineUnavailable(ContainersError):
    """No Docker engine answers, and none can be started on this machine."""


class BuildFailed(ContainersError):
    """An image did not build."""


class StackUnhealthy(ContainersError):
    """A compose service did not become healthy (or finish, for a one-shot) in time."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Engine:
    """A Docker engine: its client, its address (for the docker and compose CLIs), and whether
    this process started it (then :meth:`close` stops it)."""

    client: docker.DockerClient
    host: str
    started: bool = False

    @property
    def env(self) -> dict[str, str]:
        """The environment for a docker or compose command on this engine."""
        return {**os.environ, "DOCKER_HOST": self.host}

    def close(self) -> None:
        self.client.close()
        if self.started:
            stop_private_engine()


def _ping(host: str, timeout: int = 5) -> docker.DockerClient | None:
    try:
        client = docker.DockerClient(base_url=host, version="auto", timeout=timeout)
    except docker.errors.DockerException:
        return None
    try:
        client.ping()
    except (docker.errors.DockerException, OSError):
        client.close()
        return None
    client.close()
    return docker.DockerClient(base_url=host, version="auto", timeout=300)


@dataclass(frozen=True)
class PrivatePaths:
    """Where this checkout's own dockerd keeps its state: images and volumes in the checkout
    (.run/docker/data, so nothing is cached outside it), sockets and pid under /run (a unix
    socket path must stay short)."""

    data_root: Path
    log: Path
    exec_root: Path

    @property
    def socket(self) -> Path:
        return self.exec_root / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.exec_root / "dockerd.pid"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"


# The dockerd processes this process started, by pid.
_children: dict[int, subprocess.Popen[bytes]] = {}


def private_paths(root: Path = ROOT) -> PrivatePaths:
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    return PrivatePaths(
        data_root=RUN_DIR / "data",
        log=RUN_DIR / "dockerd.log",
        exec_root=Path("/run") / f"chat-docker-{digest}",
    )


def _private_pid(paths: PrivatePaths) -> int | None:
    """The pid of this checkout's dockerd, if it runs (checked against its command line)."""
    try:
        pid = int(paths.pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    ours = cmdline and Path(cmdline[0].decode()).name == "dockerd"
    return pid if ours and str(paths.exec_root).encode() in b" ".join(cmdline) else None


def private_engine_running() -> bool:
    return _private_pid(private_paths()) is not None


def start_private_engine(log: Log = say) -> Engine:
    """Start this checkout's own dockerd (as root, with Debian's docker.io) unless it runs.

    It shares nothing with another engine on the machine: its own data root, exec root and
    socket, no default bridge and no iptables rules (compose's networks are bridges of their
    own; published ports go through docker-proxy; builds use the host's network)."""
    paths = private_paths()
    if _private_pid(paths) is not None:
        client = _ping(paths.host)
        if client is not None:
            return Engine(client, paths.host, started=False)
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise EngineUnavailable(
            "no Docker engine answers (DOCKER_HOST, /var/run/docker.sock) and dockerd is not "
            "installed: install Debian's docker.io (apt-get install -y docker.io) or start one"
        )
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine answers, and only root can start dockerd here")
    paths.data_root.mkdir(parents=True, exist_ok=True)
    paths.exec_root.mkdir(parents=True, exist_ok=True)
    command = [
        dockerd,
        f"--data-root={paths.data_root}",
        f"--exec-root={paths.exec_root}",
        f"--pidfile={paths.pidfile}",
        f"--host={paths.host}",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--log-level=warn",
    ]
    log(f"starting dockerd for this checkout: DOCKER_HOST={paths.host} (log {paths.log})")
    with paths.log.open("ab") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    _children[process.pid] = process  # reaped by stop_private_engine
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = paths.log.read_text(errors="replace").splitlines()[-15:]
            raise EngineUnavailable("dockerd exited at start:\n" + "\n".join(tail))
        client = _ping(paths.host, timeout=2) if paths.socket.exists() else None
        if client is not None:
            return Engine(client, paths.host, started=True)
        time.sleep(0.5)
    process.terminate()
    raise EngineUnavailable(f"dockerd did not answer within 60 s (see {paths.log})")


def stop_private_engine(log: Log = say, timeout: float = 60) -> bool:
    """Stop this checkout's dockerd by its own pid (SIGTERM: it stops its containers first).
    False if it was not running."""
    paths = private_paths()
    pid = _private_pid(paths)
    if pid is None:
        return False
    log(f"stopping dockerd {pid}")
    os.kill(pid, signal.SIGTERM)
    child = _children.pop(pid, None)
    deadline = time.monotonic() + timeout
    while _private_pid(paths) == pid and (child is None or child.poll() is None):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    if child is not None:
        child.wait(timeout=10)
    # What dockerd leaves under its exec root: the mount of its default network namespace.
    for mount in sorted(paths.exec_root.glob("netns/*")):
        subprocess.run(["umount", str(mount)], capture_output=True, check=False)
    shutil.rmtree(paths.exec_root, ignore_errors=True)
    return True


def connect(log: Log = say) -> Engine:
    """The engine of DOCKER_HOST if set, else the machine's default one if it answers, else
    this checkout's own dockerd, started now (and stopped by :meth:`Engine.close`). With
    CHAT_DOCKER_ENGINE=private, always the checkout's own (CI: nothing cached elsewhere)."""
    if os.environ.get("CHAT_DOCKER_ENGINE", "auto") == "private":
        return start_private_engine(log)
    if os.environ.get("DOCKER_HOST"):
        host = os.environ["DOCKER_HOST"]
        client = _ping(host)
        if client is None:
            raise EngineUnavailable(f"DOCKER_HOST={host} does not answer")
        return Engine(client, host)
    default = "unix:///var/run/docker.sock"
    client = _ping(default) if Path("/var/run/docker.sock").exists() else None
    if client is not None:
        return Engine(client, default)
    return start_private_engine(log)
