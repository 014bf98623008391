"""Memory per idle WebSocket connection on one ws-edge process (loopback only).

Starts one ws-edge process (``python -m ws_edge``) on a free loopback port, with its own RSA key
pair for user tokens and a tiny stand-in for session-svc's membership endpoint (every asker is
a participant). Then opens N STOMP connections (default 2,000), each authenticated (a token of
its own user in CONNECT) and subscribed to ``/user/queue/messages``, ``/user/queue/ack`` and
its session's topic (two users per session), so the edge holds N users' bindings and N/2
sessions' bindings. It reads the edge's RSS (``/proc/<pid>/status``) before and after, prints
the growth per connection and the total, closes everything and stops the edge with SIGTERM.

    .venv/bin/python bench/ws_idle_memory.py [--connections 2000] [--sources 1] [--sockjs]

With --sockjs the connections are SockJS sessions on the xhr_streaming transport (one streamed
response held open each, frames sent with xhr_send) instead of WebSockets.

Needs RabbitMQ on 127.0.0.1:5672 (AMQP_URL to change it). Bounded: every step has a deadline,
the whole run gives up after --deadline seconds. Source addresses 127.0.0.1..127.0.0.k
(--sources k) spread the client sockets when one address runs out of ephemeral ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
from chat_stomp.frames import Frame
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from chat_testing.sockjs import SockJSStompClient
from chat_testing.stomp import StompClient

Client = StompClient | SockJSStompClient


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raise_fd_limit(wanted: int) -> None:
    """Let this process (and the edge it starts, which inherits it) hold ``wanted`` files:
    past the hard limit too where allowed (as root), else up to it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def serve_membership(port: int) -> None:
    """session-svc's membership endpoint, answering 200 to everyone, and its peers endpoint
    (one peer each) (HTTP/1.1 keep-alive); runs until killed."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                path = request.split(b" ", 2)[1].decode()
                if path.startswith("/internal/peers"):  # presence, at CONNECT: one peer each
                    body = json.dumps({"emails": ["peer@bench.example"]}).encode()
                else:
                    session = path.split("/")[3]
                    profile = str(uuid.uuid4())
                    me = {"profileId": profile, "displayName": "Me", "email": "me@x.io"}
                    peer = {"profileId": profile, "displayName": "Peer", "email": "p@x.io"}
                    body = json.dumps(
                        {"sessionId": session, "intent": "dating", "me": me, "peer": peer}
                    ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


async def wait_for_port(port: int, process: asyncio.subprocess.Process, what: str) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                if process.returncode is not None:
                    raise RuntimeError(f"{what} exited while starting") from None
                await asyncio.sleep(0.1)


async def stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def membership_stub() -> AsyncIterator[int]:
    """The membership stand-in in a process of its own (this one is busy with the clients)."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--membership-stub-port", str(port)
    )
    try:
        await wait_for_port(port, process, "the membership stand-in")
        yield port
    finally:
        await stop_process(process)


@contextlib.asynccontextmanager
async def edge_process(env: dict[str, str], port: int) -> AsyncIterator[int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ws_edge", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_for_port(port, process, "ws-edge")
        yield process.pid
    finally:
        await stop_process(process)


async def open_stomp(url: str, token: str, source: str) -> StompClient:
    """A STOMP 1.2 connection from ``source`` (a loopback address), authenticated in CONNECT."""
    websocket = await connect(
        url,
        subprotocols=[Subprotocol("v12.stomp")],
        ping_interval=None,
        local_addr=(source, 0),
    )
    client = StompClient(websocket)
    connect_frame = Frame(
        "CONNECT",
        (("accept-version", "1.2"), ("host", "/"), ("heart-beat", "0,0"), ("passcode", token)),
    )
    await client.write(connect_frame)
    reply = await client.next_frame(30)
    if reply.command != "CONNECTED":
        await client.close()
        raise RuntimeError(f"CONNECT refused: {reply.header('message')}")
    return client


async def open_clients(
    url: str,
    tokens: list[str],
    sessions: list[uuid.UUID],
    sources: int,
    parallel: int,
    http: aiohttp.ClientSession | None = None,
) -> list[Client]:
    """STOMP connections over WebSockets at ``url`` (ws://.../ws), or, given ``http``, SockJS
    sessions at ``url`` (http://.../ws)."""
    clients: list[Client | None] = [None] * len(tokens)
    limit = asyncio.Semaphore(parallel)
    opened = [0]

    async def one(i: int) -> None:
        async with limit:
            source = f"127.0.0.{1 + i % sources}"
            client: Client
            if http is None:
                client = await open_stomp(url, tokens[i], source)
            else:
                client = await SockJSStompClient.open(http, url, token=tokens[i])
            await client.subscribe("/user/queue/messages")
            await client.subscribe("/user/queue/ack")
            await client.subscribe(f"/topic/session.{sessions[i // 2]}", ("receipt", "r"))
            reply = await client.next_frame(30)
            if reply.command != "RECEIPT":
                raise RuntimeError(f"subscription refused: {reply.header('message')}")
            clients[i] = client
            opened[0] += 1
            if opened[0] % 1000 == 0:
                print(f"  {opened[0]:,} open", file=sys.stderr, flush=True)

    await asyncio.gather(*(one(i) for i in range(len(tokens))))
    return [c for c in clients if c is not None]


async def measure(
    connections: int, sources: int, parallel: int, hold: float, sockjs: bool = False
) -> dict[str, float]:
    raise_fd_limit(2 * connections + 1024)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    tokens = [
        jwt.encode(
            {"sub": f"idle{i}@bench.example", "iat": now, "exp": now + 3600, "iss": "bench"},
            key,
            algorithm="RS256",
        )
        for i in range(connections + 20)
    ]
    sessions = [uuid.uuid4() for _ in range(connections // 2 + 11)]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        pem = Path(tmp) / "issuer.pem"
        pem.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        async with membership_stub() as stub_port:
            env = {
                **os.environ,
                "PORT": str(port),
                "HOST": "127.0.0.1",
                "INSTANCE_ID": f"bench-{uuid.uuid4().hex[:8]}",
                "JWT_PUBLIC_KEY_FILE": str(pem),
                "JWT_ISSUER": "bench",
                "SESSION_SVC_URL": f"http://127.0.0.1:{stub_port}",
                "MESSAGE_SVC_URL": "http://127.0.0.1:9",
                "LOG_LEVEL": "WARNING",
            }
            for name in ("JWT_JWKS_URL", "JWT_AUDIENCE"):
                env.pop(name, None)
            async with (
                edge_process(env, port) as pid,
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0),
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                ) as http,
            ):
                scheme = "http" if sockjs else "ws"
                url = f"{scheme}://127.0.0.1:{port}/ws"
                over = http if sockjs else None
                # warm-up: code paths, caches and the first bindings, then the baseline
                warm = await open_clients(url, tokens[-20:], sessions[-10:], 1, parallel, over)
                await asyncio.sleep(1.0)
                before = rss_kib(pid)
                started = time.monotonic()
                held = await open_clients(
                    url, tokens[:connections], sessions, sources, parallel, over
                )
                opened_in = time.monotonic() - started
                await asyncio.sleep(hold)  # idle: let the edge settle
                after = rss_kib(pid)
                await asyncio.gather(*(c.close() for c in held + warm), return_exceptions=True)
    growth = after - before
    return {
        "connections": len(held),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "growth_kib": growth,
        "per_connection_kib": growth / max(1, len(held)),
        "open_seconds": opened_in,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--sources", type=int, default=1, help="127.0.0.1..127.0.0.k")
    parser.add_argument("--parallel", type=int, default=100, help="handshakes at once")
    parser.add_argument("--hold", type=float, default=3.0, help="idle seconds before measuring")
    parser.add_argument("--deadline", type=float, default=600.0)
    parser.add_argument("--sockjs", action="store_true", help="SockJS xhr_streaming sessions")
    parser.add_argument("--membership-stub-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.membership_stub_port:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_membership(args.membership_stub_port))
        return

    async def run() -> dict[str, float]:
        async with asyncio.timeout(args.deadline):
            return await measure(
                args.connections, args.sources, args.parallel, args.hold, args.sockjs
            )

    result = asyncio.run(run())
    kind = "SockJS xhr_streaming sessions" if args.sockjs else "connections"
    print(
        f"{result['connections']:.0f} idle {kind} (authenticated; subscribed to 2 user "
        f"queues and a session topic) opened in {result['open_seconds']:.1f} s\n"
        f"edge RSS {result['rss_before_kib'] / 1024:.1f} MiB -> "
        f"{result['rss_after_kib'] / 1024:.1f} MiB: "
        f"+{result['growth_kib'] / 1024:.1f} MiB held, "
        f"{result['per_connection_kib']:.1f} KiB per connection"
    )


if __name__ == "__main__":
    main()
