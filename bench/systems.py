"""The systems the benchmark measures with one generator and one workload: RabbitMQ's Web-STOMP
plugin (the broker-only floor) and the chat stack, by send path (REST, STOMP) and WebSocket
route (through the gateway's ``/ws``, or straight to ws-edge as the Ingress's ``ws-direct``
component routes it in a cluster)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

import cpu
import pgstats
from generator import SessionSpec
from sweep import System

WEB_STOMP_URL = "ws://127.0.0.1:15674/ws"
WEB_STOMP_LOGIN = (("login", "guest"), ("passcode", "guest"))
# The stand-in for FlairBit is outside the product: its CPU is reported, not counted in the
# stack's.
NOT_THE_STACK = frozenset({"flairbit"})
SHARED_SERVERS = ("postgres", "rabbitmq", "redis")


def web_stomp_sessions(count: int) -> list[SessionSpec]:
    tag = uuid.uuid4().hex[:8]
    return [SessionSpec(i, f"/topic/bench-{tag}.{i}") for i in range(count)]


def web_stomp() -> System:
    def roles() -> dict[int, str]:
        return {pid: role for pid, role in cpu.server_processes().items() if role == "rabbitmq"}

    return System("web-stomp", roles, ("rabbitmq",), labels={"send_path": "stomp", "route": ""})


@dataclass(frozen=True)
class Stack:
    port_base: int
    run_dir: Path
    database_url: str

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.port_base}"

    @property
    def flairbit(self) -> str:
        return f"http://127.0.0.1:{self.port_base + 10}"

    def ws_url(self, route: str) -> str:
        """``gateway``: the public ``/ws``; ``direct``: ws-edge's own port."""
        port = self.port_base if route == "gateway" else self.port_base + 3
        return f"ws://127.0.0.1:{port}/ws"

    def roles(self) -> dict[int, str]:
        found = cpu.server_processes()
        found.update(cpu.pid_files(self.run_dir))
        return found

    def system_roles(self) -> tuple[str, ...]:
        services = {role for role in cpu.pid_files(self.run_dir).values()}
        return tuple(sorted(services - NOT_THE_STACK)) + SHARED_SERVERS

    def system(self, send_path: str, route: str, pg: asyncpg.Connection) -> System:
        async def counters() -> pgstats.PgCounters:
            return await pgstats.read(pg)

        labels: Mapping[str, str] = {"send_path": send_path, "route": route}
        return System(
            f"stack-{send_path}-{route}", self.roles, self.system_roles(), counters, labels
        )

    async def sessions(self, count: int) -> list[SessionSpec]:
        """``count`` sessions of two new users each, opened through the gateway."""
        run = uuid.uuid4().hex[:8]
        async with httpx.AsyncClient(timeout=30) as http:

            async def token(email: str) -> str:
                answer = await http.post(f"{self.flairbit}/dev/token", json={"email": email})
                answer.raise_for_status()
                return str(answer.json()["token"])

            async def one(i: int) -> SessionSpec:
                a, b = f"a{i}.{run}@bench.example", f"b{i}.{run}@bench.example"
                ta, tb = await token(a), await token(b)
                answer = await http.post(
                    f"{self.gateway}/api/chat/init",
                    json={"toEmail": b, "intent": "dating"},
                    headers={"Authorization": f"Bearer {ta}"},
                )
                answer.raise_for_status()
                sid = str(answer.json()["sessionId"])
                return SessionSpec(i, f"/topic/session.{sid}", sid, (ta, tb))

            specs: list[SessionSpec] = []
            for start in range(0, count, 10):
                batch = range(start, min(count, start + 10))
                specs.extend(await asyncio.gather(*(one(i) for i in batch)))
            return specs
