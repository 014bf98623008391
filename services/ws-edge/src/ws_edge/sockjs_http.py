"""SockJS's HTTP transports (``xhr_streaming``, ``eventsource``, ``xhr`` polling, ``xhr_send``)
and ``/info``, as an aiohttp application under the STOMP endpoint's prefix; the protocol's
rules are in :mod:`ws_edge.sockjs`, this is their I/O.

Each SockJS session is a STOMP connection like any other (a
:class:`~ws_edge.client.ClientSession` over an :class:`HttpSession` link): the same
authentication (a token in CONNECT, or ``access_token`` in the URL, which sockjs-client repeats
on every request), subscriptions, limits, Origin rule and handshake metering. Bounds:

- frames wait for a receiver in the session's queue, capped like a WebSocket's outbound buffer
  (``MAX_OUTBOUND_BYTES``); past it the client is too slow and the session closes;
- a streaming response ends after ``STREAM_LIMIT_BYTES`` (the client opens the next one);
- a session no request received for ``SOCKJS_DISCONNECT_DELAY_SECONDS`` is over (its STOMP
  connection ends as a lost transport), and is forgotten as long after that;
- one ``xhr_send`` per session at a time (another one meanwhile gets 409), answered once the
  STOMP connection has taken its messages (or is closing), its body at most
  ``SOCKJS_MAX_SEND_BYTES``;
- a session opened with a token in its URL answers only requests carrying the same token; one
  whose token comes in CONNECT answers only requests from the client address that opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from chat_common.handshake import handshake_token, origin_allowed

from . import sockjs
from .disconnect import Disconnect
from .links import LinkLost, Outlet
from .metrics import SOCKJS_SESSIONS

log = logging.getLogger(__name__)

_NO_CACHE = "no-store, no-cache, no-transform, must-revalidate, max-age=0"
_CONTENT_TYPES = {
    sockjs.Transport.XHR: "application/javascript; charset=UTF-8",
    sockjs.Transport.XHR_STREAMING: "application/javascript; charset=UTF-8",
    sockjs.Transport.EVENTSOURCE: "text/event-stream; charset=UTF-8",
}
_ENDED = object()  # what the inbound queue yields once the session is over


class HttpSession:
    """One SockJS session carried by HTTP requests: the STOMP connection's link (the client's
    messages from ``xhr_send``) and its outlet (frames queued for the receiving requests)."""

    def __init__(self, core: sockjs.Session, token: str | None, address: str) -> None:
        self.core = core
        self.token = token  # the URL's token when it opened: later requests must repeat it
        self.address = address  # the client's when it opened: without a URL token, its key
        self._inbound: asyncio.Queue[object] = asyncio.Queue()
        self._wake = asyncio.Event()  # something for the receiver to take
        self._taken = asyncio.Event()  # the receiver took frames (room() waits on it)
        self._closed = asyncio.Event()  # the close frame went out, or the session expired
        self._stopped = asyncio.Event()  # the STOMP connection reads no more (it is closing)
        self.sending = asyncio.Lock()  # one xhr_send at a time
        self.closed_at: float | None = None
        self.task: asyncio.Task[None] | None = None

    # -- the link (ws_edge.links.Link) ---------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        while True:
            item = await self._inbound.get()
            if item is _ENDED:
                raise LinkLost
            assert isinstance(item, str)
            yield item
            self._inbound.task_done()

    def outlet(self, max_bytes: int, slow_close_seconds: float) -> Outlet:
        return self

    def abort(self) -> None:
        self.expire(time.monotonic())

    # -- the outlet (ws_edge.links.Outlet) -----------------------------------------------------

    @property
    def buffered(self) -> int:
        return self.core.buffered

    def send(self, chunks: list[bytes]) -> bool:
        size = sum(len(chunk) for chunk in chunks)
        if not self.core.push([chunk.decode() for chunk in chunks], size):
            return False
        self._wake.set()
        return True

    def close(self, reason: Disconnect) -> None:
        code = 1000 if reason is Disconnect.TRANSPORT_LOST else reason.code
        slow = reason is Disconnect.SLOW_CONSUMER
        self.core.close(code, reason.reason, drop_pending=slow)
        self._stopped.set()
        self._wake.set()

    async def room(self) -> None:
        while self.core.buffered > self.core.max_bytes // 2 and self.core.close_reason is None:
            self._taken.clear()
            await self._taken.wait()

    async def finished(self, within: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), within)

    # -- what the transports do ----------------------------------------------------------------

    async def deliver(self, messages: list[str]) -> None:
        """Hand ``messages`` to the STOMP connection; return once it has taken them all, or
        once it is closing (it reads no more: a DISCONNECT's ``xhr_send`` is answered at once,
        not when the session expires)."""
        if self.core.state is sockjs.State.CLOSED or self._stopped.is_set():
            return
        for message in messages:
            self._inbound.put_nowait(message)
        waits = [
            asyncio.ensure_future(self._inbound.join()),
            asyncio.ensure_future(self._closed.wait()),
            asyncio.ensure_future(self._stopped.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    def take(self, now: float, polling: bool) -> list[bytes]:
        self._wake.clear()
        frames = self.core.take(now, polling=polling)
        if frames:
            self._taken.set()
            if self.core.state is sockjs.State.CLOSED:
                self._ended(now)
        return frames

    async def wait(self, seconds: float) -> bool:
        """Wait for frames to take; False when ``seconds`` passed first."""
        try:
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))
        except TimeoutError:
            return False
        return True

    def expire(self, now: float) -> None:
        """The client is gone: the STOMP connection ends as a lost transport."""
        if self.core.state is not sockjs.State.CLOSED:
            self.core.expire()
        self._ended(now)
        self._wake.set()

    def _ended(self, now: float) -> None:
        """The session is over (its close frame went out, or it expired): the STOMP
        connection's link ends too."""
        if self.closed_at is None:
            self.closed_at = now
            self._inbound.put_nowait(_ENDED)
        self._closed.set()
        self._taken.set()


Opener = Callable[[HttpSession, str | None], Awaitable[None]]
"""Runs a new session's STOMP connection (with the URL's token) until it ends."""


@dataclass(frozen=True)
class Limits:
    max_outbound_bytes: int
    max_send_bytes: int
    disconnect_delay: float = sockjs.DISCONNECT_DELAY_SECONDS
    stream_limit: int = sockjs.STREAM_LIMIT_BYTES
    heartbeat_seconds: float = sockjs.HEARTBEAT_SECONDS


Admit = Callable[[web.Request], Awaitable[web.Response | None]]
"""Refuses a new session (an answer: 403, 429, 503) or lets it open (None)."""

Operational = Callable[[str], tuple[int, bytes, str] | None]
"""The edge's ``/healthz``, ``/readyz``, ``/metrics`` by path: (status, body, content type)."""

Address = Callable[[web.Request], str]
"""The client's address of a request (the TCP peer, or a trusted proxy's X-Forwarded-For)."""


def _peer(request: web.Request) -> str:
    return request.remote or "unknown"


class SockJSApp:
    """The sessions of this edge and the routes that serve them."""

    def __init__(
        self,
        prefix: str,
        limits: Limits,
        allowed_origins: tuple[str, ...],
        admit: Admit,
        opener: Opener,
        *,
        websocket: bool = True,
        operational: Operational | None = None,
        address: Address = _peer,
    ) -> None:
        self.prefix = prefix
        self.limits = limits
        self._origins = allowed_origins
        self._admit = admit
        self._open = opener
        self._address = address
        self._websocket = websocket
        self._operational = operational
        self.sessions: dict[str, HttpSession] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_send_bytes)
        app.router.add_route("*", self.prefix + "/{tail:.*}", self._dispatch)
        # A connection that served SockJS stays with this server for its later requests
        # (ws_edge.ports): the probes and the WebSocket endpoint are answered here too.
        app.router.add_route("GET", self.prefix, self._elsewhere)
        app.router.add_route("*", "/{path:.*}", self._elsewhere)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        self._sweeper = asyncio.create_task(self._sweep())

    async def _stop(self, _: web.Application) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        now = time.monotonic()
        for session in list(self.sessions.values()):
            session.expire(now)

    async def _sweep(self) -> None:
        """Every second: expire sessions nobody receives, forget those over for a while."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for key, session in list(self.sessions.items()):
                if session.closed_at is None and session.core.expired(now):
                    session.expire(now)
                done = session.task is None or session.task.done()
                over = session.closed_at is not None and not session.core.receiving
                if over and done and now - (session.closed_at or now) >= session.core.delay:
                    del self.sessions[key]

    # -- routing -------------------------------------------------------------------------------

    async def _elsewhere(self, request: web.Request) -> web.StreamResponse:
        if request.path == self.prefix:
            return web.Response(status=400, text="open the WebSocket on a new connection")
        found = self._operational(request.path) if self._operational is not None else None
        if found is None:
            return web.Response(status=404, text="not found")
        status, body, content_type = found
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        found = sockjs.route(request.path, self.prefix)
        origin = request.headers.get("Origin")
        if origin is not None and not origin_allowed(origin, self._origins, request.host):
            return web.Response(status=403, text="origin not allowed")
        if found is None:
            return web.Response(status=404, text="not found")
        if isinstance(found, sockjs.Greeting):
            return self._answer(request, web.Response(text="Welcome to SockJS!\n"))
        if isinstance(found, sockjs.Info):
            return await self._info(request)
        transport = found.transport
        if request.method == "OPTIONS":
            return self._preflight(request, transport.method)
        if transport is sockjs.Transport.WEBSOCKET:
            # WebSocket handshakes reach the WebSocket server (ws_edge.ports); one arriving here
            # came on a connection already serving HTTP.
            return web.Response(status=400, text="open the WebSocket on a new connection")
        if request.method != transport.method:
            return web.Response(
                status=405, text=f"use {transport.method}", headers={"Allow": transport.method}
            )
        if transport is sockjs.Transport.XHR_SEND:
            return await self._send(request, found.session)
        return await self._receive(request, found.session, transport)

    def _answer(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        response.headers.update(self._cors(request))
        response.headers["Cache-Control"] = _NO_CACHE
        return response

    @staticmethod
    def _cors(request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin")
        if origin is None or origin == "null":
            return {"Access-Control-Allow-Origin": "*"}
        return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}

    def _preflight(self, request: web.Request, method: str) -> web.Response:
        headers = self._cors(request)
        headers.update(
            {
                "Access-Control-Allow-Methods": f"OPTIONS, {method}",
                "Access-Control-Max-Age": "31536000",
                "Cache-Control": "public, max-age=31536000",
            }
        )
        asked = request.headers.get("Access-Control-Request-Headers")
        if asked:
            headers["Access-Control-Allow-Headers"] = asked
        return web.Response(status=204, headers=headers)

    async def _info(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return self._preflight(request, "GET")
        if request.method != "GET":
            return web.Response(status=405, text="use GET", headers={"Allow": "GET"})
        body = sockjs.info(self._websocket, secrets.randbits(32))
        response = web.Response(body=body, content_type="application/json", charset="UTF-8")
        return self._answer(request, response)

    # -- sessions ------------------------------------------------------------------------------

    def _known(self, request: web.Request, key: str) -> HttpSession | None:
        """The session ``key``, if this request may use it: the same URL token, if it had one;
        else the same client address (its token is in CONNECT, so its id alone would open it)."""
        session = self.sessions.get(key)
        if session is None:
            return None
        if session.token is None:
            return session if self._address(request) == session.address else None
        token = handshake_token(request.headers.get("Authorization"), request.query_string)
        same = token is not None and hmac.compare_digest(token.encode(), session.token.encode())
        return session if same else None

    async def _send(self, request: web.Request, key: str) -> web.StreamResponse:
        session = self._known(request, key)
        if session is None:
            return self._answer(request, web.Response(status=404, text="no such session"))
        if session.sending.locked():  # sockjs-client sends the next one after the answer
            text = "another xhr_send of this session is in progress"
            return self._answer(request, web.Response(status=409, text=text))
        async with session.sending:
            try:
                messages = sockjs.parse_messages(await request.read())
            except sockjs.BadPayload as exc:
                return self._answer(request, web.Response(status=400, text=str(exc)))
            await session.deliver(messages)
        response = web.Response(status=204, headers={"Content-Type": "text/plain; charset=UTF-8"})
        return self._answer(request, response)

    async def _receive(
        self, request: web.Request, key: str, transport: sockjs.Transport
    ) -> web.StreamResponse:
        session = self._known(request, key)
        if session is None:
            if key in self.sessions:  # someone else's session (another token or address)
                return self._answer(request, web.Response(status=404, text="no such session"))
            refused = await self._admit(request)
            if refused is not None:
                return self._answer(request, refused)
            if key in self.sessions:  # opened by a request that came in meanwhile
                session = self._known(request, key)
                if session is None:
                    return self._answer(request, web.Response(status=404, text="no such session"))
            else:
                session = self._new(request, key)
                SOCKJS_SESSIONS.labels(transport.value).inc()
        response = web.StreamResponse(headers={"Content-Type": _CONTENT_TYPES[transport]})
        self._answer(request, response)
        await response.prepare(request)
        if prelude := sockjs.prelude(transport):
            await response.write(prelude)
        now = time.monotonic()
        attached = session.core.attach(now)
        if attached is not sockjs.Attach.ATTACHED:
            gone = attached is sockjs.Attach.CLOSED
            frame = session.core.goodbye() if gone else sockjs.close_frame(*sockjs.STILL_OPEN)
            await response.write(sockjs.framed(transport, frame))
            return response
        try:
            await self._stream(session, response, transport)
        except ConnectionError:
            return response  # the client went away: the session waits for its next request
        finally:
            session.core.detach(time.monotonic())
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    def _new(self, request: web.Request, key: str) -> HttpSession:
        url_token = handshake_token(None, request.query_string)
        core = sockjs.Session(
            self.limits.max_outbound_bytes, time.monotonic(), self.limits.disconnect_delay
        )
        session = HttpSession(core, url_token, self._address(request))
        self.sessions[key] = session
        token = handshake_token(request.headers.get("Authorization"), request.query_string)
        session.task = asyncio.create_task(self._run(session, token))
        return session

    async def _run(self, session: HttpSession, token: str | None) -> None:
        try:
            await self._open(session, token)
        except Exception:
            log.exception("SockJS session failed")
        finally:
            session.expire(time.monotonic())

    async def _stream(
        self, session: HttpSession, response: web.StreamResponse, transport: sockjs.Transport
    ) -> None:
        polling = not transport.streams
        written = 0
        while True:
            now = time.monotonic()
            frames = session.take(now, polling)
            if frames:
                data = b"".join(sockjs.framed(transport, frame) for frame in frames)
                await response.write(data)
                written += len(data)
                over = session.core.state is sockjs.State.CLOSED
                if polling or over or written >= self.limits.stream_limit:
                    return
                continue
            if session.core.state is sockjs.State.CLOSED:
                await response.write(sockjs.framed(transport, session.core.goodbye()))
                return
            wait = session.core.heartbeat_at(self.limits.heartbeat_seconds) - now
            if not await session.wait(wait):
                await response.write(
                    sockjs.framed(transport, session.core.heartbeat(time.monotonic()))
                )
                if polling:
                    return
