"""The Node.js client scripts of tests/node (unmodified @stomp/stompjs and sockjs-client):
one case's run (the fixture that makes sure Node, npm and the packages are there is
``node_ready`` in conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from chat_testing.stack import ROOT

NODE_DIR = ROOT / "tests" / "node"


def run_case(node: Path, case: str, env: dict[str, str]) -> dict[str, Any]:
    run = subprocess.run(
        [str(node), "chat-e2e.mjs", case],
        cwd=NODE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    lines = run.stdout.strip().splitlines()
    assert lines, f"no output from the {case} case: {run.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert run.returncode == 0, (result, run.stderr)
    assert result["ok"] is True
    return result


def run_at_once(node: Path, case: str, envs: dict[str, dict[str, str]]) -> dict[str, Any]:
    """``case`` once per entry of ``envs``, all at the same time; each one's result by key
    (each must have succeeded)."""
    runs = {
        key: subprocess.Popen(
            [str(node), "chat-e2e.mjs", case],
            cwd=NODE_DIR,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, env in envs.items()
    }
    results: dict[str, Any] = {}
    try:
        for key, run in runs.items():
            out, err = run.communicate(timeout=90)
            lines = out.strip().splitlines()
            assert lines, f"{key}: no output from the {case} case: {err}"
            results[key] = json.loads(lines[-1])
            assert run.returncode == 0, (key, results[key], err)
            assert results[key]["ok"] is True, key
    finally:
        # every process ended and its pipes closed, also those not read when one failed
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.wait()
            for pipe in (run.stdout, run.stderr):
                if pipe is not None:
                    pipe.close()
    return results
