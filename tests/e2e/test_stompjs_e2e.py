"""@stomp/stompjs under Node.js, unmodified, through the gateway of the whole stack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT, Stack

pytestmark = pytest.mark.e2e
NODE_DIR = ROOT / "tests" / "node"


@pytest.fixture(scope="module")
def node_ready() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are needed for the @stomp/stompjs client")
    if not (NODE_DIR / "node_modules" / "@stomp" / "stompjs").exists():
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent"],
            cwd=NODE_DIR,
            check=True,
            timeout=300,
        )
    return Path(node)


def test_stompjs_sends_receives_and_resumes(stack: Stack, node_ready: Path) -> None:
    alice, bob = stack.token("js.alice@example.com"), stack.token("js.bob@example.com")
    opened = httpx.post(
        f"{stack.gateway}/api/chat/init",
        json={"toEmail": "js.bob@example.com", "intent": "dating"},
        headers={"Authorization": f"Bearer {alice}"},
        timeout=10,
    )
    session_id = opened.json()["sessionId"]
    run = subprocess.run(
        [str(node_ready), "chat-e2e.mjs"],
        cwd=NODE_DIR,
        env={
            **os.environ,
            "WS_URL": stack.gateway.replace("http://", "ws://") + "/ws",
            "SESSION_ID": session_id,
            "ALICE_TOKEN": alice,
            "BOB_TOKEN": bob,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, (result, run.stderr)
    assert result["receipts"] == 3
    assert len(result["topic"]) == 3
    assert result["seqs"] == sorted(result["seqs"])
    assert result["headers"] == "message,application/json"
    last = result["seqs"][-1]
    assert result["resumed"] == [last + 1, last + 2, last + 3]
