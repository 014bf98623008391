"""Memory per idle connection on one ws-edge process: N authenticated connections, each
subscribed to its session's topic and its user queue, then idle.

    cd bench && ../.venv/bin/python ws_idle_memory.py [--connections 2000]

Starts the stack like `make bench` does (its own ports, database and virtual host), reads the
edge's resident memory from /proc before and after, prints the growth per connection, then
closes everything and stops the stack. Loopback only; several 127.0.0.x source addresses are
used when one runs out of ports."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import httpx
from run import PORT_BASE, STACK_ENV, make

from chat_testing.stomp import StompClient


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def measure(connections: int) -> dict[str, float]:
    gateway = f"http://127.0.0.1:{PORT_BASE}"
    flairbit = f"http://127.0.0.1:{PORT_BASE + 10}"
    edge_url = f"ws://127.0.0.1:{PORT_BASE + 3}/ws"
    edge_pid = int((Path(STACK_ENV["RUN_DIR"]) / "pids" / "ws-edge.pid").read_text())
    tag = str(int(time.time()))
    async with httpx.AsyncClient(timeout=30) as http:
        tokens, sessions = [], []
        for pair in range(connections // 2):
            a, b = f"m{pair}a.{tag}@bench.example", f"m{pair}b.{tag}@bench.example"
            ta = (await http.post(f"{flairbit}/dev/token", json={"email": a})).json()["token"]
            tb = (await http.post(f"{flairbit}/dev/token", json={"email": b})).json()["token"]
            opened = await http.post(
                f"{gateway}/api/chat/init",
                json={"toEmail": b, "intent": "dating"},
                headers={"Authorization": f"Bearer {ta}"},
            )
            sessions += [opened.json()["sessionId"]] * 2
            tokens += [ta, tb]
    await asyncio.sleep(1.0)
    before = rss_kib(edge_pid)
    clients: list[StompClient] = []
    try:
        for index, (token, session) in enumerate(zip(tokens, sessions, strict=True)):
            client = await StompClient.open(edge_url, headers=(("passcode", token),))
            await client.subscribe(f"/topic/session.{session}")
            await client.subscribe("/user/queue/messages")
            clients.append(client)
            if index % 500 == 499:
                print(f"  {index + 1} connections", flush=True)
        await asyncio.sleep(3.0)  # let allocations settle
        after = rss_kib(edge_pid)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    grown = (after - before) * 1024
    return {
        "connections": len(clients),
        "edge_rss_before_mib": round(before / 1024, 1),
        "edge_rss_after_mib": round(after / 1024, 1),
        "bytes_per_connection": round(grown / max(1, len(clients))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args()
    make("up")
    try:
        result = asyncio.run(measure(args.connections))
    finally:
        make("down")
    for key, value in result.items():
        print(f"{key:>24}: {value}")
    print("target: under 30 KB (30,720 bytes) per idle, authenticated, subscribed connection")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
