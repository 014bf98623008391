"""``/ws`` (and SockJS's ``/ws/{server}/{session}/websocket``) relayed to ws-edge: frames
both ways, the subprotocol and close codes kept.

Each direction awaits the other side's send before reading more, so a slow reader slows its
sender instead of growing a buffer. The gateway checks the browser's ``Origin`` against
``ALLOWED_ORIGINS`` itself and opens its connection to the edge without one, so the edge's own
Origin check (which matters when an Ingress routes ``/ws`` straight to it) never sees the
browser's. The edge authenticates: it sees the client's ``Authorization`` header, query string
(``access_token``) and ``User-Agent``, plus the request id and ``X-Forwarded-For`` (the client's
address, by the gateway's ``TRUST_FORWARDED_FOR`` rule).

A handshake the edge refuses is refused with the edge's own status, headers that matter to the
client (``Retry-After``, ``WWW-Authenticate``, ``Content-Type``) and body; an edge that cannot
be reached gives 503 (504 when it is too slow to answer), as the HTTP routes do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from chat_common.errors import ChatError, DependencyError, DependencyTimeout, DependencyUnavailable
from chat_common.handshake import origin_allowed
from chat_common.observability import request_id_var
from chat_common.problems import error_response, problem_response

log = logging.getLogger(__name__)
# The websockets library logs request lines at DEBUG, and the edge's has the client's query
# string (an access_token): its logger stays at WARNING whatever LOG_LEVEL says.
_socket_log = logging.getLogger("gateway.websockets")
_socket_log.setLevel(logging.WARNING)

_FORWARDED = ("authorization", "user-agent")
_PASSED_BACK = ("content-type", "retry-after", "www-authenticate")
# Messages from the edge to the client (the edge caps what it sends well below this).
MAX_MESSAGE = 1 << 20
OPEN_TIMEOUT_SECONDS = 5.0


def edge_refusal(status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
    """The edge's refusal of a handshake as the client gets it: a refusal status (4xx, 5xx)
    passes through; anything else the edge answered instead of switching protocols is a 502."""
    if not 400 <= status <= 599:
        return error_response(
            DependencyError(f"ws-edge answered {status} to the handshake", code="EDGE_FAILED")
        )
    kept = {k.lower(): v for k, v in headers if k.lower() in _PASSED_BACK}
    return Response(body, status_code=status, headers=kept)


async def deny(websocket: WebSocket, response: Response, close_code: int) -> None:
    """Refuse the handshake with ``response``, or close with ``close_code`` where the server
    cannot send a denial response."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=close_code)


async def relay(
    websocket: WebSocket, edge_url: str, allowed_origins: tuple[str, ...], *, forwarded_for: str
) -> None:
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, allowed_origins, websocket.headers.get("host")):
        refused = problem_response(
            403,
            title="Forbidden",
            detail="this Origin may not open a WebSocket here",
            code="ORIGIN_NOT_ALLOWED",
        )
        await deny(websocket, refused, 1008)
        return
    query = websocket.url.query
    # /ws, or SockJS's websocket transport (/ws/{server}/{session}/websocket): the same path
    target = edge_url.rstrip("/") + websocket.url.path + (f"?{query}" if query else "")
    headers = [(name, websocket.headers[name]) for name in _FORWARDED if name in websocket.headers]
    request_id = request_id_var.get()
    if request_id:
        headers.append(("x-request-id", request_id))
    headers.append(("x-forwarded-for", forwarded_for))
    requested = [Subprotocol(p) for p in websocket.scope.get("subprotocols", [])]
    try:
        upstream = await connect(
            target,
            subprotocols=requested or None,
            additional_headers=headers,
            origin=None,
            open_timeout=OPEN_TIMEOUT_SECONDS,
            max_size=MAX_MESSAGE,
            max_queue=4,
            ping_interval=None,
            compression=None,
            logger=_socket_log,
        )
    except InvalidStatus as exc:
        answer = exc.response
        refusal = edge_refusal(
            answer.status_code, list(answer.headers.raw_items()), bytes(answer.body)
        )
        await deny(websocket, refusal, 1008 if answer.status_code in (401, 403) else 1011)
        return
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        log.warning("ws-edge is unreachable: %s", type(exc).__name__, extra={"upstream": "ws-edge"})
        error: ChatError = (
            DependencyTimeout("ws-edge did not answer in time", code="UPSTREAM_TIMEOUT")
            if isinstance(exc, TimeoutError)
            else DependencyUnavailable("ws-edge is unavailable", code="UPSTREAM_UNAVAILABLE")
        )
        await deny(websocket, error_response(error), 1013)
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
                code = message.get("code", 1000)
                # 1005/1006 (no code, connection lost) name local events, never sent in a frame.
                await upstream.close(
                    code=1001 if code in (1005, 1006) else code,
                    reason=message.get("reason") or "",
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
