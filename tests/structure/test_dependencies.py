"""Each service pulls in only what it uses: chat_common is a small core (msgspec alone) with
optional parts (``jwt``, ``web``, ``tracing``, ``db``, ``amqp``, ``redis``), and the lock's
resolution of each service leaves out the drivers it has no use for. Checked twice: in
``uv.lock`` (what an image installs) and by importing every module of the service in a fresh
interpreter (what its code needs at run time)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import tomllib
from collections import deque
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

# service distribution, its package, what it must never pull in (distribution names, and the
# top-level modules they install)
NOT_FOR = {
    "chat-gateway": ("gateway", {"asyncpg": "asyncpg", "aio-pika": "aio_pika"}),
    "chat-ws-edge": ("ws_edge", {"asyncpg": "asyncpg", "starlette": "starlette"}),
    "chat-outbox-relay": ("outbox_relay", {"redis": "redis", "pyjwt": "jwt"}),
    "chat-session-svc": ("session_svc", {"aio-pika": "aio_pika"}),
    "chat-testing": ("chat_testing", {"asyncpg": "asyncpg", "aio-pika": "aio_pika"}),
}


def _lock() -> dict[str, dict[str, Any]]:
    packages = tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    return {p["name"]: p for p in packages}


def closure(name: str, lock: dict[str, dict[str, Any]]) -> set[str]:
    """Every distribution ``name`` installs (its dependencies and their extras), from uv.lock."""
    seen: set[tuple[str, str | None]] = set()
    found: set[str] = set()
    todo: deque[tuple[str, str | None]] = deque([(name, None)])
    while todo:
        current, extra = todo.popleft()
        if (current, extra) in seen:
            continue
        seen.add((current, extra))
        found.add(current)
        package = lock[current]
        deps: list[dict[str, Any]] = (
            package.get("dependencies", [])
            if extra is None
            else package.get("optional-dependencies", {}).get(extra, [])
        )
        for dep in deps:
            todo.append((dep["name"], None))
            for wanted in dep.get("extra", []):
                todo.append((dep["name"], wanted))
    return found


@pytest.mark.parametrize("service", sorted(NOT_FOR))
def test_the_lock_leaves_out_what_the_service_does_not_use(service: str) -> None:
    installed = closure(service, _lock())
    _, forbidden = NOT_FOR[service]
    assert installed.isdisjoint(forbidden), installed & set(forbidden)


def test_the_core_of_chat_common_needs_msgspec_alone() -> None:
    assert closure("chat-common", _lock()) == {"chat-common", "msgspec"}


@pytest.mark.parametrize("service", sorted(NOT_FOR))
def test_importing_the_service_loads_none_of_it(service: str) -> None:
    package, forbidden = NOT_FOR[service]
    module = __import__(package)
    names = [package] + [
        info.name
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}.")
        if not info.name.endswith("__main__")
    ]
    program = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert loaded.isdisjoint(forbidden.values()), loaded & set(forbidden.values())
