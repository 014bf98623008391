"""The whole stack started with `make up` on its own ports, run dir and database."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from chat_testing.chats import Chat, open_chat
from chat_testing.stack import ROOT, Stack, port_base, running_stack
from chat_testing.stomp import StompClient

from .node import NODE_DIR

__all__ = ["ROOT", "Chat", "Stack", "open_chat", "port_base", "second_edge", "subscribed"]

# Per pytest process, so that stacks started side by side never share a database or vhost.
E2E_DATABASE_URL = os.environ.get(
    "E2E_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/chat_e2e_{os.getpid()}"
)
E2E_AMQP_VHOST = os.environ.get("E2E_AMQP_VHOST", f"chat_e2e_{os.getpid()}")
# Redis as in production (shared limits, seats, presence): a database of this suite's own,
# emptied before the stack starts, so nothing of an earlier run carries over.
E2E_REDIS_DB = 6


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis(port=6379, db=E2E_REDIS_DB).flushdb()
    with running_stack(
        tmp_path_factory.mktemp("stack"),
        database_url=E2E_DATABASE_URL,
        vhost=E2E_AMQP_VHOST,
        first_port=18080,
        extra_env={"REDIS_URL": f"redis://127.0.0.1:6379/{E2E_REDIS_DB}"},
    ) as started:
        yield started


@pytest.fixture(scope="session")
def node_ready() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "Node.js and npm are needed for the @stomp/stompjs client:"
            " apt-get install -y nodejs npm",
            pytrace=False,
        )
    modules = NODE_DIR / "node_modules"
    if not all((modules / package).exists() for package in ("@stomp/stompjs", "sockjs-client")):
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent"],
            cwd=NODE_DIR,
            check=True,
            timeout=300,
        )
    return Path(node)


SECOND_EDGE = 2  # the stack's extra ws-edge instance, on port base+3+2


@contextlib.contextmanager
def second_edge(stack: Stack) -> Iterator[int]:
    """A second ws-edge instance of the stack (same broker, database and services), reached
    directly on its own port, as a load balancer would spread clients over edges; its port."""
    stack.start_service("ws-edge", SECOND_EDGE)
    port = stack.port_base + 3 + SECOND_EDGE
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the second edge did not become ready"
            time.sleep(0.1)
        yield port
    finally:
        stack.stop_service("ws-edge", SECOND_EDGE)


async def subscribed(client: StompClient, destination: str, *headers: tuple[str, str]) -> None:
    """SUBSCRIBE, then wait for the edge's RECEIPT: the subscription is authorised and bound,
    so what is published from now on reaches it (no fixed sleep for that). MESSAGE frames of
    the client's earlier subscriptions may come first (what was on its way to them) and are
    passed over; any other frame before the RECEIPT fails."""
    receipt = f"subscribed-{uuid.uuid4().hex[:8]}"
    subscription = await client.subscribe(destination, *headers, ("receipt", receipt))
    frame = await client.next_frame()
    while frame.command == "MESSAGE" and frame.header("subscription") != subscription:
        frame = await client.next_frame()
    assert (frame.command, frame.header("receipt-id")) == ("RECEIPT", receipt), frame
