"""``/ws`` relayed to ws-edge: frames both ways, the subprotocol and close codes kept.

Each direction awaits the other side's send before reading more, so a slow reader slows its
sender instead of growing a buffer. The edge does the authentication (it sees the same
``Authorization`` header, query string and ``Origin``) and the gateway checks the Origin first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

log = logging.getLogger(__name__)

_FORWARDED = ("authorization", "x-request-id", "user-agent")
MAX_MESSAGE = 1 << 20


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """Clients that send no Origin (not browsers) pass; browsers must be on the list."""
    return origin is None or "*" in allowed or origin in allowed


async def relay(websocket: WebSocket, edge_url: str, allowed_origins: tuple[str, ...]) -> None:
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, allowed_origins):
        await websocket.close(code=1008, reason="origin not allowed")
        return
    query = websocket.url.query
    target = edge_url.rstrip("/") + "/ws" + (f"?{query}" if query else "")
    headers = [(name, websocket.headers[name]) for name in _FORWARDED if name in websocket.headers]
    if websocket.client is not None:
        headers.append(("x-forwarded-for", websocket.client.host))
    requested = [Subprotocol(p) for p in websocket.scope.get("subprotocols", [])]
    try:
        upstream = await connect(
            target,
            subprotocols=requested or None,
            additional_headers=headers,
            origin=None,
            open_timeout=5,
            max_size=MAX_MESSAGE,
            max_queue=4,
            ping_interval=None,
            compression=None,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        await websocket.close(code=1008 if status in (401, 403) else 1011, reason=f"edge {status}")
        return
    except (OSError, TimeoutError, InvalidHandshake):
        log.warning("ws-edge is unreachable at %s", edge_url)
        await websocket.close(code=1013, reason="edge unavailable")
        return
    async with upstream:
        await websocket.accept(subprotocol=upstream.subprotocol)
        await _pump_both(websocket, upstream)


async def _pump_both(websocket: WebSocket, upstream: ClientConnection) -> None:
    to_edge = asyncio.create_task(_client_to_edge(websocket, upstream))
    to_client = asyncio.create_task(_edge_to_client(websocket, upstream))
    done, pending = await asyncio.wait({to_edge, to_client}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.debug("ws relay ended: %r", task.exception())


async def _client_to_edge(websocket: WebSocket, upstream: ClientConnection) -> None:
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(
                    code=message.get("code", 1000), reason=message.get("reason") or ""
                )
                return
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send(message["text"])
    except (WebSocketDisconnect, ConnectionClosed):
        with contextlib.suppress(Exception):
            await upstream.close()


async def _edge_to_client(websocket: WebSocket, upstream: ClientConnection) -> None:
    try:
        async for data in upstream:
            if isinstance(data, bytes):
                await websocket.send_bytes(data)
            else:
                await websocket.send_text(data)
    except ConnectionClosed:
        pass
    code = upstream.close_code or 1000
    reason = upstream.close_reason or ""
    with contextlib.suppress(Exception):
        await websocket.close(code=code if code not in (1005, 1006) else 1011, reason=reason)
