"""No package imports itself in a circle: within each package of the workspace, the graph of
module imports (type-level ones under ``TYPE_CHECKING`` included) has no cycle, and
``libs/testing`` depends on no service. Read from the sources, nothing imported."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    ROOT / "libs/common/src/chat_common",
    ROOT / "libs/stomp/src/chat_stomp",
    ROOT / "libs/testing/src/chat_testing",
    ROOT / "migrations/src/chat_migrations",
    ROOT / "services/gateway/src/gateway",
    ROOT / "services/session-svc/src/session_svc",
    ROOT / "services/message-svc/src/message_svc",
    ROOT / "services/outbox-relay/src/outbox_relay",
    ROOT / "services/ws-edge/src/ws_edge",
    ROOT / "dev/flairbit-stub/src/flairbit_stub",
]


def _modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (``pkg`` is its ``__init__``)."""
    found = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of the same package that module ``name`` imports."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
            children: list[str] = []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                bases = [f"{base}.{node.module}" if node.module else base]
            else:
                bases = [node.module or ""]
            children = [alias.name for alias in node.names]
        else:
            continue
        for base in bases:
            hits = [f"{base}.{child}" for child in children if f"{base}.{child}" in known]
            if hits:
                targets.update(hits)
            elif base in known:
                targets.add(base)
    targets.discard(name)
    return targets


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


@pytest.mark.parametrize("package", SOURCES, ids=lambda p: p.name)
def test_no_import_cycle_in_the_package(package: Path) -> None:
    modules = _modules(package)
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    # A package's __init__ may re-export its modules; a module importing its own package's
    # __init__ back is what closes a circle, and counts.
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_the_test_library_depends_on_no_service() -> None:
    project = tomllib.loads((ROOT / "libs/testing/pyproject.toml").read_text())
    services = {
        tomllib.loads(p.read_text())["project"]["name"]
        for p in (ROOT / "services").glob("*/pyproject.toml")
    }
    wanted = {
        dep.split(">")[0].split("=")[0].split("[")[0].strip()
        for dep in project["project"]["dependencies"]
    }
    assert wanted.isdisjoint(services), wanted & services
