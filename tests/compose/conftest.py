"""The compose test's stack: the seven images built as `make images` builds them, then
docker-compose.yml started with tests/compose/compose.test.yml (nothing published but the
gateway, on a loopback port the engine picks) and, where no registry gives the official server
images, deploy/docker/compose.local-servers.yml; healthy before any test, removed with its
volumes after. Not part of `make test` (pyproject's testpaths leave tests/compose out):
`make compose-test` runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from chat_stomp.frames import Frame

from chat_testing import compose_stack, containers, docker_engine
from chat_testing.stomp import StompClient

HERE = Path(__file__).resolve().parent
PROJECT = os.environ.get("COMPOSE_TEST_PROJECT", "chat-compose-test")
# Ours and the servers: healthy; the one-shots: exited 0.
SERVICES = (
    "postgres",
    "rabbitmq",
    "redis",
    "flairbit",
    "session-svc",
    "message-svc",
    "ws-edge",
    "outbox-relay",
    "gateway",
)
ONE_SHOTS = ("keys", "migrations")
# The compose services that run our images, with the module each runs.
OURS = {
    "gateway": "gateway",
    "session-svc": "session_svc",
    "message-svc": "message_svc",
    "ws-edge": "ws_edge",
    "outbox-relay": "outbox_relay",
    "flairbit": "flairbit_stub",
}


@dataclass
class ComposeStack:
    engine: docker_engine.Engine
    compose: compose_stack.Compose
    gateway: str  # http://127.0.0.1:PORT
    files: list[Path] = field(default_factory=list)

    @property
    def ws(self) -> str:
        return self.gateway.replace("http://", "ws://") + "/ws"

    def token(self, email: str) -> str:
        """A user token from the FlairBit stand-in, through the gateway's /dev/token."""
        answer = httpx.post(f"{self.gateway}/dev/token", json={"email": email}, timeout=10)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["token"])

    def restarts(self, service: str) -> int:
        container = self.compose.container(service)
        container.reload()
        return int(container.attrs.get("RestartCount", 0))


@pytest.fixture(scope="session")
def engine() -> Iterator[docker_engine.Engine]:
    started = docker_engine.connect()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="session")
def images(engine: docker_engine.Engine) -> dict[str, str]:
    """Built as `make images` builds them: chat/<name>:dev -> image id."""
    base = containers.python_base(engine.client, os.environ.get("BASE_IMAGE") or None)
    return containers.build_images(engine.client, base=base)


@pytest.fixture(scope="session")
def stack(engine: docker_engine.Engine, images: dict[str, str]) -> Iterator[ComposeStack]:
    files = [docker_engine.ROOT / "docker-compose.yml"]
    override = containers.server_images(engine.client)
    if override is not None:
        files.append(override)
    files.append(HERE / "compose.test.yml")
    compose = compose_stack.Compose(engine, PROJECT, files)
    # Whatever an interrupted run left.
    compose.run("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
    started = time.monotonic()
    try:
        try:
            compose.run("up", "--detach", "--no-build", "--pull", "never", timeout=300)
        except docker_engine.ContainersError as error:
            # Say which container failed and why, rather than compose's one line.
            compose_stack.wait_healthy(compose, SERVICES, one_shots=ONE_SHOTS, timeout=1)
            raise error
        compose_stack.wait_healthy(compose, SERVICES, one_shots=ONE_SHOTS, timeout=180)
        print(f"\ncompose stack healthy in {time.monotonic() - started:.0f} s")
        port = compose_stack.host_port(compose.container("gateway"), 8080)
        yield ComposeStack(engine, compose, f"http://127.0.0.1:{port}", files)
    finally:
        compose.run("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)


# ---- a conversation ---------------------------------------------------------------------


class Listener:
    """A STOMP connection through the gateway whose frames are collected as they come; a frame
    is taken by the first :meth:`next` that asks for its command, whatever arrived before it."""

    def __init__(self, client: StompClient) -> None:
        self.client = client
        self._frames: list[Frame] = []
        self._arrived = asyncio.Condition()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.client.frames():
                async with self._arrived:
                    self._frames.append(frame)
                    self._arrived.notify_all()

    async def next(self, within: float, command: str = "MESSAGE") -> Frame:
        async with asyncio.timeout(within), self._arrived:
            while True:
                for index, frame in enumerate(self._frames):
                    if frame.command == command:
                        return self._frames.pop(index)
                await self._arrived.wait()

    async def nothing_for(self, seconds: float) -> list[Frame]:
        """The MESSAGE frames that arrive within ``seconds`` (expected: none)."""
        got: list[Frame] = []
        with contextlib.suppress(TimeoutError):
            while True:
                got.append(await self.next(seconds))
        return got

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self.client.close()
        with contextlib.suppress(BaseException):
            await self._task


Listen = Callable[..., Awaitable[Listener]]


@pytest.fixture
async def listen(stack: ComposeStack) -> AsyncIterator[Listen]:
    """``await listen(token, destination...)``: a connection subscribed to each destination."""
    opened: list[Listener] = []

    async def open_(token: str, *destinations: str) -> Listener:
        client = await StompClient.open(f"{stack.ws}?access_token={token}")
        listener = Listener(client)
        opened.append(listener)
        for destination in destinations:
            await client.subscribe(destination)
        await asyncio.sleep(0.3)  # the edge binds its queue to the new keys
        return listener

    yield open_
    for listener in opened:
        await listener.close()
