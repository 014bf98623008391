"""The STOMP core stays pure: every module of ``chat_stomp`` imports the standard library
and its own package only, and none of the standard library's I/O, concurrency or clock."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import chat_stomp
import pytest

PACKAGE = "chat_stomp"
PACKAGE_DIR = Path(chat_stomp.__file__).parent
MODULES = sorted(PACKAGE_DIR.glob("*.py"))

# Standard-library modules that would bring I/O, tasks, threads or a clock into the core.
IMPURE = frozenset(
    {
        "asyncio",
        "concurrent",
        "importlib",
        "multiprocessing",
        "os",
        "selectors",
        "signal",
        "socket",
        "ssl",
        "subprocess",
        "threading",
        "time",
    }
)


def _module_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what is imported) for every import in ``tree``; relative imports as written."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            found.append((node.lineno, "__import__()"))
    return found


def forbidden_imports(source: str) -> list[str]:
    """The imports in ``source`` that the pure core may not have."""
    bad: list[str] = []
    for line, name in _module_names(ast.parse(source)):
        if name.startswith(".."):
            bad.append(f"line {line}: {name} (outside the package)")
        elif name.startswith(".") or name == PACKAGE or name.startswith(PACKAGE + "."):
            continue
        else:
            top = name.split(".")[0]
            if top == "__future__":
                continue
            if top not in sys.stdlib_module_names or top in IMPURE:
                bad.append(f"line {line}: {name}")
    return bad


def test_the_package_has_modules() -> None:
    assert {p.stem for p in MODULES} >= {"__init__", "connection", "frames", "parser"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_module_imports_only_the_standard_library(path: Path) -> None:
    assert forbidden_imports(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import websockets.frames",
        "from aio_pika import Message",
        "import asyncpg",
        "from msgspec import json",
        "from ws_edge.client import ClientSession",
        "from ..edge import Edge",
        "import time",
        "if TYPE_CHECKING:\n    from websockets import ServerConnection",
        "def f():\n    import socket",
        "mod = __import__('aio_pika')",
    ],
)
def test_the_check_catches_what_it_must(source: str) -> None:
    assert forbidden_imports(source)


def test_the_check_allows_the_standard_library_and_the_package() -> None:
    source = (
        "from __future__ import annotations\nimport re\nfrom dataclasses import dataclass\n"
        "from .frames import Frame\nfrom chat_stomp.parser import Limits\n"
    )
    assert forbidden_imports(source) == []
