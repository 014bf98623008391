"""Several ws-edge instances: a message sent through one reaches clients of another, and an
edge that stops tells its clients to reconnect elsewhere (close 1012)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from chat_testing.stomp import StompClient

from .conftest import ROOT, Stack, port_base, subscribed

pytestmark = pytest.mark.e2e


@pytest.fixture
def second_edge(stack: Stack) -> Iterator[str]:
    base = int(stack.gateway.rsplit(":", 1)[1])
    port = port_base(base + 200)
    env = {
        **stack.env,
        "PORT": str(port),
        "JWT_JWKS_URL": f"{stack.flairbit}/.well-known/jwks.json",
        "JWT_ISSUER": "flairbit",
        "JWT_AUDIENCE": "chat",
        "SESSION_SVC_URL": stack.session_svc,
        "MESSAGE_SVC_URL": f"http://127.0.0.1:{base + 2}",
        "AMQP_URL": f"amqp://guest:guest@127.0.0.1:5672/{stack.env['AMQP_VHOST']}",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "ws_edge"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, "the second edge exited"
        assert time.monotonic() < deadline, "the second edge did not become ready"
        time.sleep(0.1)
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=15)


async def open_chat(stack: Stack) -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:6]
    alice, bob = stack.token(f"a.{tag}@example.com"), stack.token(f"b.{tag}@example.com")
    async with httpx.AsyncClient() as client:
        opened = await client.post(
            f"{stack.gateway}/api/chat/init",
            json={"toEmail": f"b.{tag}@example.com", "intent": "dating"},
            headers={"Authorization": f"Bearer {alice}"},
        )
    return opened.json()["sessionId"], alice, bob


async def test_a_send_on_one_edge_reaches_a_client_of_another(
    stack: Stack, second_edge: str
) -> None:
    session_id, alice_token, bob_token = await open_chat(stack)
    alice = await StompClient.open(
        stack.gateway.replace("http://", "ws://") + "/ws", headers=(("passcode", alice_token),)
    )
    bob = await StompClient.open(f"{second_edge}?access_token={bob_token}")
    try:
        await subscribed(bob, f"/topic/session.{session_id}")
        await subscribed(bob, "/user/queue/messages")
        body = {
            "sessionId": session_id,
            "content": "across edges",
            "clientMessageId": str(uuid.uuid4()),
        }
        await alice.send("/app/chat.send", json.dumps(body).encode(), ("receipt", "x"))
        assert (await alice.next_frame()).command == "RECEIPT"
        got = [await bob.next_frame(), await bob.next_frame()]
        assert {f.header("destination") for f in got} == {
            f"/topic/session.{session_id}",
            "/user/queue/messages",
        }
        assert all(json.loads(f.body)["content"] == "across edges" for f in got)
    finally:
        await alice.close()
        await bob.close()


async def test_sigterm_closes_clients_with_1012(stack: Stack, second_edge: str) -> None:
    _, _, bob_token = await open_chat(stack)
    bob = await StompClient.open(f"{second_edge}?access_token={bob_token}")
    edge_port = int(second_edge.rsplit(":", 1)[1].split("/")[0])
    owner = _listener_pid(edge_port)
    os.kill(owner, signal.SIGTERM)

    async def read_until_closed() -> None:
        async with asyncio.timeout(10):
            while True:
                await bob.socket.recv()

    with pytest.raises(ConnectionClosed):
        await read_until_closed()
    assert bob.socket.close_code == 1012


def _listener_pid(port: int) -> int:
    """The pid of the process listening on ``port`` (read from /proc, no extra tools)."""
    inode = None
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                inode = fields[9]
    assert inode is not None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") == f"socket:[{inode}]":
                    return int(entry)
        except OSError:
            continue
    raise AssertionError(f"nobody listens on {port}")
