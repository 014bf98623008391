"""SockJS under /ws/ on a real edge (RabbitMQ, session-svc, message-svc; ws_edge.sockjs_http,
ws_edge.links, ws_edge.ports): a hand-written SockJS client over aiohttp (xhr_streaming,
eventsource, xhr polling, xhr_send) and the websockets library (the websocket transport).

STOMP works over every transport as over /ws; then each transport's own rules: the preludes
and frame formats, /info and CORS, a streaming response recycled after its byte limit, a
session nobody receives for the disconnect delay expired (its STOMP connection ended, its
seat given back) and forgotten, one receiver at a time, xhr_send's refusals, the Origin rule,
the URL token binding a session, the slow-consumer close, heart-beats; and the port shared
with /ws, /healthz and /metrics (the request line chooses the server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import aiohttp
import httpx
import pytest
from chat_stomp.frames import SERVER_COMMANDS, Frame, serialize
from chat_stomp.parser import FrameParser
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from chat_common import routing
from chat_testing.stomp import BENCH_LIMITS, StompClient
from chat_testing.waiting import eventually
from ws_edge import client as client_module
from ws_edge import ports
from ws_edge.client import ClientSession
from ws_edge.disconnect import Disconnect
from ws_edge.server import Running

pytestmark = pytest.mark.integration

WITHIN = 10.0  # seconds any single wait may take
XHR_PRELUDE = b"h" * 2048 + b"\n"
ORIGIN = "http://app.example"  # the world's edges allow this one
EVIL = Origin("http://evil.example")
HTTP_TRANSPORTS = ("xhr_streaming", "eventsource", "xhr")


def stomp(command: str, *headers: tuple[str, str], body: bytes = b"") -> str:
    return serialize(Frame(command, headers, body)).decode()


def connect_frame(token: str | None = None) -> str:
    headers = [("accept-version", "1.2"), ("host", "/"), ("heart-beat", "0,0")]
    if token:
        headers.append(("passcode", token))
    return stomp("CONNECT", *headers)


class Closed(Exception):
    """The SockJS session closed: ``frame`` is its ``c[...]``."""

    def __init__(self, frame: bytes) -> None:
        super().__init__(frame.decode())
        self.frame = frame

    @property
    def close(self) -> list[Any]:
        return list(json.loads(self.frame[1:]))


class SockJSClient:
    """One SockJS session by hand: a receiver that keeps one receiving request open (the next
    one as soon as one ends, as sockjs-client does) or a WebSocket; messages sent with
    xhr_send (or over the WebSocket); what arrives parsed into SockJS frames, and the STOMP
    frames inside them."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        port: int,
        transport: str,
        *,
        token: str | None = None,
        session: str | None = None,
    ) -> None:
        self.http = http
        self.port = port
        self.transport = transport
        self.session = session or uuid.uuid4().hex
        self.query = f"?access_token={token}" if token else ""
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.responses: list[list[bytes]] = []  # each finished receiving response's frames
        self.socket: ClientConnection | None = None
        self._parser = FrameParser(BENCH_LIMITS, commands=SERVER_COMMANDS)
        self._stomp: deque[Frame] = deque()
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None  # what stopped the receiver

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}/ws/000/{self.session}/{kind}{self.query}"

    async def open(self, *, fresh: bool = True) -> None:
        """Start receiving; the first frame of a ``fresh`` session is the open frame."""
        if self.transport == "websocket":
            self.socket = await connect(
                self.url("websocket").replace("http://", "ws://"), ping_interval=None
            )
            self._task = asyncio.create_task(self._receive_socket(self.socket))
        else:
            self._task = asyncio.create_task(self._receive_http())
        if fresh:
            assert await self.next_sockjs() == b"o"

    async def _receive_socket(self, socket: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in socket:
                self.frames.put_nowait(message.encode() if isinstance(message, str) else message)

    async def _receive_http(self) -> None:
        try:
            while True:
                frames = await read_frames(
                    self.http, self.url(self.transport), self.transport, sink=self.frames.put_nowait
                )
                self.responses.append(frames)
                if any(frame.startswith(b"c") for frame in frames):
                    return
        except Exception as exc:  # a wrong answer: the test's next read raises it
            self._failed = exc
            self.frames.put_nowait(b"")

    async def next_sockjs(self, within: float = WITHIN, *, heartbeats: bool = False) -> bytes:
        async with asyncio.timeout(within):
            while True:
                frame = await self.frames.get()
                if self._failed is not None:
                    raise AssertionError("the receiving request failed") from self._failed
                if frame != b"h" or heartbeats:
                    return frame

    async def next_frame(self, within: float = WITHIN) -> Frame:
        """The next STOMP frame; :class:`Closed` when the session closes first."""
        async with asyncio.timeout(within):
            while not self._stomp:
                frame = await self.next_sockjs(within)
                if frame.startswith(b"c"):
                    raise Closed(frame)
                assert frame.startswith(b"a"), frame
                for message in json.loads(frame[1:]):
                    for event in self._parser.feed(message.encode()):
                        if isinstance(event, Frame):
                            self._stomp.append(event)
            return self._stomp.popleft()

    async def send(self, *messages: str) -> None:
        if self.socket is not None:
            await self.socket.send(json.dumps(list(messages)))
            return
        async with self.http.post(self.url("xhr_send"), data=json.dumps(messages)) as answer:
            assert answer.status == 204, (answer.status, await answer.text())

    async def connect(self, token: str | None = None) -> Frame:
        await self.send(connect_frame(token))
        connected = await self.next_frame()
        assert connected.command == "CONNECTED", connected
        return connected

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.socket is not None:
            await self.socket.close()


async def read_frames(
    http: aiohttp.ClientSession,
    url: str,
    transport: str,
    *,
    sink: Callable[[bytes], None] | None = None,
    **kwargs: Any,
) -> list[bytes]:
    """One receiving request (``transport``): its SockJS frames, checked against the
    transport's format (prelude, framing), read until the response ends (each also handed to
    ``sink`` as it arrives)."""
    method = "GET" if transport == "eventsource" else "POST"
    async with http.request(method, url, **kwargs) as response:
        assert response.status == 200, (response.status, await response.text())
        return await frames_of(response, transport, sink)


async def frames_of(
    response: aiohttp.ClientResponse,
    transport: str,
    sink: Callable[[bytes], None] | None = None,
) -> list[bytes]:
    kind = response.headers["Content-Type"]
    if transport == "eventsource":
        assert kind == "text/event-stream; charset=UTF-8"
        prelude, end = b"\r\n", b"\r\n\r\n"
    else:
        assert kind == "application/javascript; charset=UTF-8"
        prelude, end = (XHR_PRELUDE if transport == "xhr_streaming" else b""), b"\n"
    assert response.headers["Cache-Control"].startswith("no-store")
    if prelude:
        assert await response.content.readexactly(len(prelude)) == prelude
    frames: list[bytes] = []
    while not response.content.at_eof():
        line = await response.content.readuntil(end)
        if not line:
            break
        assert line.endswith(end), line
        frame = line[: -len(end)]
        if transport == "eventsource":
            assert frame.startswith(b"data: "), frame
            frame = frame[len(b"data: ") :]
        assert b"\n" not in frame
        frames.append(frame)
        if sink is not None:
            sink(frame)
    assert transport != "xhr" or len(frames) == 1, frames  # a poll: one frame per response
    return frames


class Clients:
    """Every SockJS client of a test (closed before the world's edges stop) and one aiohttp
    client session (a pool with keep-alive, as a browser has)."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self._open: list[SockJSClient] = []

    async def open(
        self, edge: Running, transport: str, *, token: str | None = None, session: str | None = None
    ) -> SockJSClient:
        client = SockJSClient(
            self.http, edge.edge_server.settings.port, transport, token=token, session=session
        )
        self._open.append(client)
        await client.open(fresh=session is None)
        return client

    async def close(self) -> None:
        for client in self._open:
            await client.close()


@pytest.fixture
async def clients(world: Any) -> AsyncIterator[Clients]:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=WITHIN, sock_read=WITHIN * 4)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        opened = Clients(http)
        try:
            yield opened
        finally:
            await opened.close()


async def start_edge(world: Any, **overrides: Any) -> Running:
    """An edge for the test; sessions nobody receives from hold its stop for a short grace."""
    edge: Running = await world.edge(**{"shutdown_grace_seconds": 0.5, **overrides})
    return edge


def connections(edge: Running) -> list[ClientSession]:
    """The edge's STOMP connections."""
    found = list(edge.edge.clients.values())
    assert all(isinstance(client, ClientSession) for client in found)
    return cast(list[ClientSession], found)


def base(edge: Running) -> str:
    return f"http://127.0.0.1:{edge.edge_server.settings.port}"


# -- STOMP over every transport ---------------------------------------------------------------


@pytest.mark.parametrize("transport", [*HTTP_TRANSPORTS, "websocket"])
async def test_stomp_works_over_every_transport(
    world: Any, clients: Clients, transport: str
) -> None:
    """CONNECT, SUBSCRIBE, a message from the other side, a SEND receipted after its commit,
    a DISCONNECT: all as over /ws, and the session's STOMP connection leaves the edge."""
    chat = await world.chat()
    world.relay.start()
    edge = await start_edge(world)
    bob = await clients.open(edge, transport)
    connected = await bob.connect(chat.bob_token)
    assert connected.header("version") == "1.2"
    [session] = connections(edge)
    assert session.email == chat.bob
    await bob.send(stomp("SUBSCRIBE", ("id", "t"), ("destination", chat.topic), ("receipt", "s")))
    assert (await bob.next_frame()).header("receipt-id") == "s"

    sent = await world.rest_send(chat, chat.alice, "hello over sockjs \u2028 ünï")
    message = await bob.next_frame()
    assert message.command == "MESSAGE"
    assert message.header("destination") == chat.topic
    assert message.header("x-seq") == str(sent["seq"])
    assert json.loads(message.body)["content"] == "hello over sockjs \u2028 ünï"

    cid = str(uuid.uuid4())
    body = json.dumps({"sessionId": str(chat.id), "content": "from bob", "clientMessageId": cid})
    await bob.send(
        stomp(
            "SEND",
            ("destination", "/app/chat.send"),
            ("content-type", "application/json"),
            ("receipt", "send-1"),
            body=body.encode(),
        )
    )
    frames = [await bob.next_frame(), await bob.next_frame()]  # the receipt and its message
    receipt = next(f for f in frames if f.command == "RECEIPT")
    echoed = next(f for f in frames if f.command == "MESSAGE")
    assert receipt.header("receipt-id") == "send-1"
    assert json.loads(echoed.body)["clientMessageId"] == cid
    stored = await world.pool.fetchval(
        "SELECT content FROM chat_messages WHERE client_msg_id = $1", uuid.UUID(cid)
    )
    assert stored == "from bob"

    await bob.send(stomp("DISCONNECT", ("receipt", "bye")))
    assert (await bob.next_frame()).header("receipt-id") == "bye"
    with pytest.raises(Closed) as closed:
        await bob.next_frame()
    assert closed.value.close == [1000, ""]
    await eventually(lambda: edge.edge.clients == {}, what="the STOMP connection gone")
    assert session.ending is Disconnect.CLIENT


async def test_a_bad_token_gets_the_error_then_the_close_over_http(
    world: Any, clients: Clients
) -> None:
    edge = await start_edge(world)
    client = await clients.open(edge, "xhr_streaming")
    await client.send(connect_frame("garbage"))
    error = await client.next_frame()
    assert error.command == "ERROR"
    with pytest.raises(Closed) as closed:
        await client.next_frame()
    assert closed.value.close == [Disconnect.UNAUTHENTICATED.code, "unauthenticated"]
    await eventually(lambda: edge.edge.clients == {}, what="the refused connection gone")


# -- what each transport writes ----------------------------------------------------------------


async def test_each_receiving_transport_opens_with_its_prelude_and_format(world: Any) -> None:
    edge = await start_edge(world)
    async with aiohttp.ClientSession() as http:
        for transport, method, expected in (
            ("xhr_streaming", "POST", XHR_PRELUDE + b"o\n"),
            ("eventsource", "GET", b"\r\ndata: o\r\n\r\n"),
            ("xhr", "POST", b"o\n"),
        ):
            url = f"{base(edge)}/ws/000/{uuid.uuid4().hex}/{transport}"
            async with http.request(method, url) as response:
                assert response.status == 200
                async with asyncio.timeout(WITHIN):
                    got = await response.content.readexactly(len(expected))
                assert got == expected, transport
                assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_info_the_greeting_and_cors(world: Any) -> None:
    edge = await start_edge(world)
    async with httpx.AsyncClient(base_url=base(edge), timeout=WITHIN) as http:
        info = await http.get("/ws/info")
        assert info.status_code == 200
        assert info.headers["content-type"] == "application/json; charset=UTF-8"
        assert info.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in info.headers
        assert info.headers["cache-control"].startswith("no-store")
        body = info.json()
        assert set(body) == {"websocket", "origins", "cookie_needed", "entropy"}
        assert body["websocket"] is True
        assert body["cookie_needed"] is False
        assert body["origins"] == ["*:*"]
        entropies = {body["entropy"], (await http.get("/ws/info")).json()["entropy"]}
        assert len(entropies) == 2  # random each time

        from_app = await http.get("/ws/info", headers={"Origin": ORIGIN})
        assert from_app.headers["access-control-allow-origin"] == ORIGIN
        assert from_app.headers["access-control-allow-credentials"] == "true"

        preflight = await http.options(
            "/ws/info",
            headers={"Origin": ORIGIN, "Access-Control-Request-Headers": "x-requested-with"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-methods"] == "OPTIONS, GET"
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert preflight.headers["access-control-allow-headers"] == "x-requested-with"
        assert int(preflight.headers["access-control-max-age"]) > 0
        assert (await http.post("/ws/info")).status_code == 405

        greeting = await http.get("/ws/")
        assert greeting.status_code == 200
        assert greeting.text == "Welcome to SockJS!\n"

        for transport, method in (("xhr", "POST"), ("xhr_send", "POST"), ("eventsource", "GET")):
            preflight = await http.options(f"/ws/000/{uuid.uuid4().hex}/{transport}")
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-methods"] == f"OPTIONS, {method}"
        assert (await http.get("/ws/000/abc/xhr")).status_code == 405
        assert (await http.post("/ws/000/abc/eventsource")).status_code == 405
        assert (await http.post("/ws/000/abc/nope")).status_code == 404
        assert (await http.post("/ws/000/a.b/xhr")).status_code == 404


async def test_heartbeats_go_out_on_streams_and_end_polls(world: Any, clients: Clients) -> None:
    edge = await start_edge(world, sockjs_heartbeat_seconds=0.3)
    started = time.monotonic()  # before the open frame, the last write
    streaming = await clients.open(edge, "xhr_streaming")
    assert await streaming.next_sockjs(heartbeats=True) == b"h"
    assert await streaming.next_sockjs(heartbeats=True) == b"h"  # and again, on the same one
    assert time.monotonic() - started >= 0.6  # two periods: the edge's timer, not at once
    assert streaming.responses == []  # still the first response

    session = uuid.uuid4().hex
    url = f"{base(edge)}/ws/000/{session}/xhr"
    started = time.monotonic()  # before the open frame, the last write
    assert await read_frames(clients.http, url, "xhr") == [b"o"]
    assert await read_frames(clients.http, url, "xhr") == [b"h"]  # nothing to say: a heart-beat
    assert time.monotonic() - started >= 0.3


# -- a streaming response's byte limit ---------------------------------------------------------


@pytest.mark.parametrize("transport", ["xhr_streaming", "eventsource"])
async def test_a_stream_ends_past_its_limit_and_the_session_goes_on(
    world: Any, clients: Clients, transport: str
) -> None:
    limit = 600
    edge = await start_edge(world, sockjs_stream_limit_bytes=limit)
    client = await clients.open(edge, transport)
    token = world.token("streamer@example.com")
    await client.connect(token)
    [session] = connections(edge)
    receipts = [f"r-{i:03}" for i in range(40)]
    for receipt in receipts:  # one at a time: each RECEIPT is a frame of its own
        await client.send(stomp("SUBSCRIBE", ("id", receipt), ("destination", "/user/queue/ack")))
        await client.send(stomp("UNSUBSCRIBE", ("id", receipt), ("receipt", receipt)))
        assert (await client.next_frame()).header("receipt-id") == receipt
    # ~2 KiB of frames: they went over several responses (the last one is still open)
    assert len(client.responses) >= 2
    for frames in client.responses:  # each ended once it passed the limit, not before
        sizes = [
            len(frame) + (len(b"data: \r\n\r\n") if transport == "eventsource" else 1)
            for frame in frames
        ]
        assert sum(sizes) >= limit
        assert sum(sizes[:-1]) < limit
    assert connections(edge) == [session]  # one STOMP connection throughout
    assert session.ending is None


# -- expiry ------------------------------------------------------------------------------------


async def test_a_session_nobody_receives_expires_and_is_forgotten(
    world: Any, clients: Clients
) -> None:
    delay = 2.0
    edge = await start_edge(
        world, sockjs_disconnect_delay_seconds=delay, max_connections_per_user=1
    )
    email = "poller@example.com"
    token = world.token(email)
    ws_url = f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws"
    client = SockJSClient(clients.http, edge.edge_server.settings.port, "xhr")
    poll_url = client.url("xhr")
    assert await read_frames(clients.http, poll_url, "xhr") == [b"o"]
    await client.send(connect_frame(token))
    left = time.monotonic()  # the last poll ends after this: nobody receives from then on
    [connected] = await read_frames(clients.http, poll_url, "xhr")
    assert json.loads(connected[1:])[0].startswith("CONNECTED\n")
    [session] = connections(edge)
    with pytest.raises(ConnectionError, match="too many open connections"):
        await StompClient.open(ws_url, headers=(("passcode", token),))  # the seat is taken

    await eventually(lambda: edge.edge.clients == {}, what="the expired session's connection")
    assert time.monotonic() - left >= delay
    assert session.ending is Disconnect.TRANSPORT_LOST
    # a later request (within the delay after the expiry) gets the goodbye
    assert await read_frames(clients.http, poll_url, "xhr") == [b'c[3000,"Go away!"]']
    again = await StompClient.open(ws_url, headers=(("passcode", token),))  # the seat is back
    await again.close()

    async def send_status() -> int:
        async with clients.http.post(client.url("xhr_send"), data='["x"]') as answer:
            return answer.status

    async def forgotten() -> bool:
        return await send_status() == 404

    await eventually(forgotten, what="the session forgotten: xhr_send answers 404")


async def test_a_disconnect_sent_with_nobody_receiving_is_answered_at_once(
    world: Any, clients: Clients
) -> None:
    """A client that stops polling and sends DISCONNECT (sockjs-client closing its transport):
    the xhr_send is answered once the STOMP connection closes, not when the session expires."""
    edge = await start_edge(world, sockjs_disconnect_delay_seconds=WITHIN * 6)
    client = await clients.open(edge, "xhr")
    await client.connect(world.token("leaving@example.com"))
    [session] = connections(edge)
    await client.close()  # nobody receives from now on

    async with asyncio.timeout(WITHIN):
        await client.send(stomp("DISCONNECT", ("receipt", "bye")))
    await eventually(lambda: edge.edge.clients == {}, what="the STOMP connection gone")
    assert session.ending is Disconnect.CLIENT


# -- one receiver at a time --------------------------------------------------------------------


async def test_a_second_receiver_gets_2010_and_the_first_keeps_the_session(
    world: Any, clients: Clients
) -> None:
    edge = await start_edge(world)
    first = await clients.open(edge, "xhr_streaming")
    still_open = b'c[2010,"Another connection still open"]'
    for transport in HTTP_TRANSPORTS:
        frames = await read_frames(clients.http, first.url(transport), transport)
        assert frames == [still_open], transport  # and the response ends
    await first.connect(world.token("first@example.com"))  # on the first stream
    assert first.responses == []  # which never ended
    [session] = connections(edge)
    assert session.ending is None


# -- xhr_send ----------------------------------------------------------------------------------


async def test_xhr_send_refusals_are_4xx_and_change_nothing(world: Any, clients: Clients) -> None:
    edge = await start_edge(world, sockjs_max_send_bytes=4096)
    client = await clients.open(edge, "xhr_streaming")
    await client.connect(world.token("sender@example.com"))
    [session] = connections(edge)
    http = clients.http

    async def post(url: str, body: bytes) -> tuple[int, str]:
        async with http.post(url, data=body) as answer:
            return answer.status, await answer.text()

    unknown = f"{base(edge)}/ws/000/{uuid.uuid4().hex}/xhr_send"
    assert (await post(unknown, b'["x"]'))[0] == 404
    send = client.url("xhr_send")
    assert await post(send, b"") == (400, "Payload expected.")
    for broken in (b"[", b"{}", b"[1]", b'["a", null]', b"\xff"):
        assert await post(send, broken) == (400, "Broken JSON encoding."), broken
    status, _ = await post(send, json.dumps(["x" * 5000]).encode())
    assert status == 413
    async with http.get(send) as wrong_method:
        assert wrong_method.status == 405
        assert wrong_method.headers["Allow"] == "POST"
    # none of it reached the STOMP connection: it still answers, in order
    await client.send(stomp("SUBSCRIBE", ("id", "a"), ("destination", "/user/queue/ack")))
    await client.send(stomp("UNSUBSCRIBE", ("id", "a"), ("receipt", "still-here")))
    assert (await client.next_frame()).header("receipt-id") == "still-here"
    assert session.ending is None
    assert connections(edge) == [session]


async def test_a_second_xhr_send_while_one_is_in_progress_gets_409(
    world: Any, clients: Clients
) -> None:
    """An xhr_send is answered once the STOMP connection took its messages; one still in
    progress (here: its body still arriving) makes another one meanwhile refused at once, and
    nothing of the refused one reaches the connection."""
    edge = await start_edge(world)
    client = SockJSClient(clients.http, edge.edge_server.settings.port, "xhr")
    poll = client.url("xhr")
    assert await read_frames(clients.http, poll, "xhr") == [b"o"]

    async def send(body: Any) -> int:
        async with clients.http.post(client.url("xhr_send"), data=body) as answer:
            return answer.status

    whole = json.dumps([connect_frame(world.token("sends@example.com"))]).encode()
    rest = asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        yield whole[:8]
        await rest.wait()
        yield whole[8:]

    first = asyncio.create_task(send(slowly()))

    async def busy() -> bool:  # an empty batch: taken or refused, it changes nothing
        return await send(b"[]") == 409

    await eventually(busy, what="the first xhr_send in progress")
    assert await send(json.dumps([stomp("SEND", ("destination", "/app/chat.typing"))])) == 409
    assert not first.done()
    rest.set()
    async with asyncio.timeout(WITHIN):
        assert await first == 204
    [connected] = await read_frames(clients.http, poll, "xhr")
    assert json.loads(connected[1:])[0].startswith("CONNECTED\n")
    # the refused SEND never reached the connection: no ERROR before the DISCONNECT's receipt
    assert await send(json.dumps([stomp("DISCONNECT", ("receipt", "bye"))])) == 204
    [receipt] = await read_frames(clients.http, poll, "xhr")
    assert json.loads(receipt[1:]) == ["RECEIPT\nreceipt-id:bye\n\n\x00"]
    assert await read_frames(clients.http, poll, "xhr") == [b'c[1000,""]']


async def test_several_messages_in_one_xhr_send_arrive_in_order(
    world: Any, clients: Clients
) -> None:
    edge = await start_edge(world)
    client = await clients.open(edge, "xhr")
    await client.send(
        connect_frame(world.token("batch@example.com")),
        *(
            stomp(
                "SUBSCRIBE",
                ("id", f"s{i}"),
                ("destination", "/user/queue/ack"),
                ("receipt", f"{i}"),
            )
            for i in range(5)
        ),
    )
    assert (await client.next_frame()).command == "CONNECTED"
    assert [(await client.next_frame()).header("receipt-id") for _ in range(5)] == [
        "0",
        "1",
        "2",
        "3",
        "4",
    ]


async def test_a_stomp_frame_may_span_messages_and_requests(world: Any, clients: Clients) -> None:
    """SockJS messages are a byte stream to STOMP: a frame cut anywhere still parses."""
    edge = await start_edge(world)
    client = await clients.open(edge, "xhr_streaming")
    connect = connect_frame(world.token("split@example.com"))
    await client.send(connect[:5], connect[5:20])  # two messages of one request
    await client.send(connect[20:])  # and the rest in another request
    assert (await client.next_frame()).command == "CONNECTED"
    subscribe = stomp("SUBSCRIBE", ("id", "a"), ("destination", "/user/queue/ack"))
    receipt = stomp("UNSUBSCRIBE", ("id", "a"), ("receipt", "joined"))
    await client.send(subscribe + receipt[:3], receipt[3:])  # two frames, cut differently
    assert (await client.next_frame()).header("receipt-id") == "joined"


async def test_a_receiver_that_goes_away_frees_the_session_for_the_next(
    world: Any, clients: Clients
) -> None:
    edge = await start_edge(world)
    client = await clients.open(edge, "xhr_streaming")
    await client.connect(world.token("wanderer@example.com"))
    await client.close()  # the browser drops the stream (its connection closes)
    await client.send(  # meanwhile: frames wait in the session
        stomp("SUBSCRIBE", ("id", "a"), ("destination", "/user/queue/ack"), ("receipt", "kept"))
    )

    async def next_receiver() -> list[bytes]:
        frames = await read_frames(clients.http, client.url("xhr"), "xhr")
        return [] if frames == [b'c[2010,"Another connection still open"]'] else frames

    [frame] = await eventually(next_receiver, what="a receiver other than the dropped one")
    [receipt] = json.loads(frame[1:])
    assert receipt.startswith("RECEIPT\nreceipt-id:kept\n")
    [session] = connections(edge)
    assert session.ending is None


# -- Origin, and a session's token ---------------------------------------------------------------


async def test_a_disallowed_origin_is_refused_everywhere(world: Any, clients: Clients) -> None:
    edge = await start_edge(world)
    client = await clients.open(edge, "xhr_streaming")
    evil = {"Origin": "http://evil.example"}
    http = clients.http
    fresh = f"{base(edge)}/ws/000/{uuid.uuid4().hex}"
    for method, url in (
        ("GET", f"{base(edge)}/ws/info"),
        ("GET", f"{base(edge)}/ws/"),
        ("OPTIONS", f"{fresh}/xhr"),
        ("POST", f"{fresh}/xhr"),
        ("POST", f"{fresh}/xhr_streaming"),
        ("GET", f"{fresh}/eventsource"),
        ("POST", client.url("xhr")),
        ("POST", client.url("xhr_send")),
    ):
        async with http.request(method, url, headers=evil, data=b'["x"]') as answer:
            assert answer.status == 403, (method, url)
            assert "Access-Control-Allow-Origin" not in answer.headers
    async with http.post(f"{fresh}/xhr_send", data=b'["x"]') as answer:
        assert answer.status == 404  # the refused requests opened no session
    assert edge.edge.clients.keys() == {next(iter(edge.edge.clients))}  # only the first one
    # the allowed origin is answered, with CORS
    async with http.post(
        client.url("xhr_send"),
        data=json.dumps([connect_frame(world.token("origin@example.com"))]),
        headers={"Origin": ORIGIN},
    ) as answer:
        assert answer.status == 204
        assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    assert (await client.next_frame()).command == "CONNECTED"
    # and the WebSocket transport applies the same rule
    ws_url = client.url("websocket").replace("http://", "ws://")
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url.replace(client.session, uuid.uuid4().hex), origin=EVIL)
    assert refused.value.response.status_code == 403


async def test_a_session_opened_with_a_url_token_answers_only_that_token(
    world: Any, clients: Clients
) -> None:
    chat = await world.chat()
    edge = await start_edge(world)
    alice = await clients.open(edge, "xhr_streaming", token=chat.alice_token)
    http = clients.http
    path = f"{base(edge)}/ws/000/{alice.session}"
    for query, headers in (
        (f"?access_token={chat.bob_token}", {}),  # another token
        ("", {}),  # none at all
        ("", {"Authorization": f"Bearer {chat.bob_token}"}),
        (f"?access_token={chat.alice_token}x", {}),
    ):
        async with http.post(f"{path}/xhr_send{query}", data=b'["x"]', headers=headers) as answer:
            assert answer.status == 404, query
        async with http.post(f"{path}/xhr{query}", headers=headers) as answer:
            assert answer.status == 404, query  # not a new session either
    # the same token, in the URL or as a bearer header: the CONNECT needs no token of its own
    async with http.post(
        f"{path}/xhr_send",
        data=json.dumps([connect_frame()]),
        headers={"Authorization": f"Bearer {chat.alice_token}"},
    ) as answer:
        assert answer.status == 204
    connected = await alice.next_frame()
    assert connected.command == "CONNECTED"
    assert connected.header("user-name") == chat.alice
    [session] = connections(edge)
    assert session.email == chat.alice


async def test_a_session_whose_token_comes_in_connect_answers_only_its_clients_address(
    world: Any, clients: Clients
) -> None:
    """Its id is then its only key: a request from another client address (X-Forwarded-For,
    trusted here as behind the gateway) neither sends into it nor receives from it."""
    chat = await world.chat()
    edge = await start_edge(world, trust_forwarded_for=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=WITHIN, sock_read=WITHIN * 4)
    async with aiohttp.ClientSession(
        timeout=timeout, headers={"X-Forwarded-For": "198.51.100.7"}
    ) as http:
        alice = SockJSClient(http, edge.edge_server.settings.port, "xhr_streaming")
        await alice.open()
        try:
            path = f"{base(edge)}/ws/000/{alice.session}"
            for forwarded in ("203.0.113.9", "198.51.100.8, 198.51.100.7", None):
                headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
                bobs = json.dumps([connect_frame(chat.bob_token)])
                async with clients.http.post(
                    f"{path}/xhr_send", data=bobs, headers=headers
                ) as answer:
                    assert answer.status == 404, forwarded
                async with clients.http.post(f"{path}/xhr", headers=headers) as answer:
                    assert answer.status == 404, forwarded  # not a new session either
            connected = await alice.connect(chat.alice_token)  # from her address: hers
            assert connected.header("user-name") == chat.alice
            [session] = connections(edge)
            assert session.email == chat.alice
        finally:
            await alice.close()


async def test_a_non_ascii_token_on_a_token_bound_session_is_a_404(
    world: Any, clients: Clients
) -> None:
    chat = await world.chat()
    edge = await start_edge(world)
    alice = await clients.open(edge, "xhr_streaming", token=chat.alice_token)
    path = f"{base(edge)}/ws/000/{alice.session}"
    async with clients.http.post(f"{path}/xhr_send?access_token=%C3%A9", data=b'["x"]') as answer:
        assert answer.status == 404
    async with clients.http.post(f"{path}/xhr?access_token=%C3%A9") as answer:
        assert answer.status == 404


async def test_new_sessions_are_metered_like_handshakes_and_their_requests_are_not(
    world: Any, clients: Clients
) -> None:
    edge = await start_edge(world, connect_ip_burst=1, connect_ip_rate_per_second=0.01)
    first = await clients.open(edge, "xhr")  # the one handshake allowed
    for transport in HTTP_TRANSPORTS:
        url = f"{base(edge)}/ws/000/{uuid.uuid4().hex}/{transport}"
        method = "GET" if transport == "eventsource" else "POST"
        async with clients.http.request(method, url) as refused:
            assert refused.status == 429, transport
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.headers["Access-Control-Allow-Origin"] == "*"
    with pytest.raises(InvalidStatus) as socket_refused:  # one bucket for both kinds
        await connect(f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws")
    assert socket_refused.value.response.status_code == 429
    await first.connect(world.token("metered@example.com"))  # its requests go on
    for i in range(5):
        ack = ("destination", "/user/queue/ack")
        await first.send(stomp("SUBSCRIBE", ("id", f"{i}"), ack, ("receipt", f"{i}")))
        assert (await first.next_frame()).header("receipt-id") == f"{i}"


# -- the bounds on what waits for a receiver -----------------------------------------------------


async def test_a_session_that_passes_its_queue_cap_is_closed_as_too_slow(
    world: Any, clients: Clients
) -> None:
    chat = await world.chat()
    edge = await start_edge(world, max_outbound_bytes=8 * 1024)
    client = SockJSClient(clients.http, edge.edge_server.settings.port, "xhr")
    poll = client.url("xhr")
    assert await read_frames(clients.http, poll, "xhr") == [b"o"]
    await client.send(
        connect_frame(chat.bob_token),
        stomp("SUBSCRIBE", ("id", "t"), ("destination", chat.topic), ("receipt", "s")),
    )
    [answered] = await read_frames(clients.http, poll, "xhr")
    assert [m.split("\n")[0] for m in json.loads(answered[1:])] == ["CONNECTED", "RECEIPT"]
    [session] = connections(edge)
    await overflow(world, edge, chat, session)  # nobody polls meanwhile
    assert session.ending is Disconnect.SLOW_CONSUMER
    # the backlog was dropped: the next poll gets the close, nothing else
    assert await read_frames(clients.http, poll, "xhr") == [
        b'c[1008,"client too slow: outbound buffer full"]'
    ]


async def overflow(world: Any, edge: Running, chat: Any, session: Any) -> None:
    """Publish ~1 KiB events to ``chat``'s topic until ``session`` is closed as too slow."""
    headers = {"x-event": "message", "x-session-id": str(chat.id)}
    body = b'{"pad":"' + b"x" * 1000 + b'"}'
    seq = 0
    async with asyncio.timeout(WITHIN):
        while session.ending is None:
            seq += 1
            await world.publish(routing.session_key(chat.id), {**headers, "x-seq": seq}, body)
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("cause", ["token_expired", "slow_consumer", "connect_timeout"])
async def test_a_close_the_edge_decides_ends_the_connection_once_the_client_took_it(
    world: Any, clients: Clients, cause: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = await world.chat()
    delay = 2.0  # the sweeper has every chance to end it too
    edge = await start_edge(
        world,
        sockjs_disconnect_delay_seconds=delay,
        max_connections_per_user=1,
        max_outbound_bytes=8 * 1024,
    )
    ttl = {"ttlSeconds": 2} if cause == "token_expired" else {}
    token = world.token(chat.bob, **ttl)
    if cause == "connect_timeout":  # anyone may open a session and never CONNECT
        monkeypatch.setattr(client_module, "CONNECT_TIMEOUT_SECONDS", 0.5)
    client = await clients.open(edge, "xhr_streaming")
    if cause == "connect_timeout":
        error = await client.next_frame(within=5)
        assert (error.command, error.header("message")) == ("ERROR", "unauthenticated")
        expected = [1008, "unauthenticated"]
    else:
        await client.connect(token)
        [session] = connections(edge)
    if cause == "slow_consumer":
        await client.close()  # nobody receives while the events pile up
        await client.send(
            stomp("SUBSCRIBE", ("id", "t"), ("destination", chat.topic), ("receipt", "s"))
        )
        await overflow(world, edge, chat, session)
        client = await clients.open(edge, "xhr_streaming", session=client.session)
        expected = [1008, "client too slow: outbound buffer full"]
    elif cause == "token_expired":
        error = await client.next_frame(within=5)
        assert (error.command, error.header("message")) == ("ERROR", "token expired")
        expected = [1008, "token expired"]
    with pytest.raises(Closed) as closed:  # the client took the close frame
        await client.next_frame()
    assert closed.value.close == expected
    await eventually(
        lambda: edge.edge.clients == {}, within=delay * 4, what="the closed connection gone"
    )
    again = await StompClient.open(  # its seat was given back
        f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws", headers=(("passcode", token),)
    )
    await again.close()


async def test_a_resumed_subscription_replays_through_a_small_queue_at_the_pollers_pace(
    world: Any, clients: Clients
) -> None:
    """x-resume-after-seq over xhr polling: the replay waits for each poll to take what is
    queued (it never passes the cap), and every message arrives once, in order."""
    chat = await world.chat()
    cap = 8 * 1024
    count = 40
    for i in range(count):  # ~0.6 KiB each: three times the cap in all
        await world.rest_send(chat, chat.alice, f"m{i:02} " + "x" * 300)
    edge = await start_edge(world, max_outbound_bytes=cap)
    bob = await clients.open(edge, "xhr")
    await bob.connect(chat.bob_token)
    [session] = connections(edge)
    await bob.send(
        stomp("SUBSCRIBE", ("id", "t"), ("destination", chat.topic), ("x-resume-after-seq", "0"))
    )
    seqs = []
    for _ in range(count):
        frame = await bob.next_frame()
        assert frame.command == "MESSAGE", frame
        seqs.append(int(frame.header("x-seq") or 0))
    assert seqs == list(range(1, count + 1))
    assert session.ending is None
    assert max(len(frame) for frames in bob.responses for frame in frames) <= cap * 2


async def test_a_shutdown_closes_sockjs_sessions_with_1012(world: Any, clients: Clients) -> None:
    async with world.edge_context(shutdown_grace_seconds=0.5) as edge:
        client = await clients.open(edge, "xhr_streaming")
        await client.connect(world.token("restart@example.com"))
    error = await client.next_frame()
    assert (error.command, error.header("message")) == ("ERROR", "edge restarting; reconnect")
    with pytest.raises(Closed) as closed:
        await client.next_frame()
    assert closed.value.close == [1012, "edge restarting; reconnect"]


# -- the websocket transport ---------------------------------------------------------------------


async def test_the_websocket_transport_frames_and_closes_as_sockjs(world: Any) -> None:
    chat = await world.chat()
    world.relay.start()
    edge = await start_edge(world)
    url = f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws/000/{uuid.uuid4().hex}/websocket"
    async with connect(url, ping_interval=None, origin=Origin(ORIGIN)) as socket:
        assert socket.subprotocol is None  # SockJS offers none
        async with asyncio.timeout(WITHIN):
            assert await socket.recv() == "o"
            await socket.send(json.dumps([connect_frame(chat.bob_token)]))
            connected = json.loads((await socket.recv())[1:])
            assert [m.split("\n")[0] for m in connected] == ["CONNECTED"]
            # several STOMP frames in one message, one JSON string also accepted
            await socket.send(
                json.dumps(
                    [
                        stomp("SUBSCRIBE", ("id", "t"), ("destination", chat.topic)),
                        stomp("SUBSCRIBE", ("id", "q"), ("destination", "/user/queue/ack")),
                    ]
                )
            )
            await socket.send(json.dumps(stomp("UNSUBSCRIBE", ("id", "q"), ("receipt", "r"))))
            message = await socket.recv()
            assert isinstance(message, str)
            assert message.startswith("a[")
            [receipt] = json.loads(message[1:])
            assert receipt.startswith("RECEIPT\nreceipt-id:r\n")
            await world.rest_send(chat, chat.alice, "over the websocket transport\u2028")
            message = await socket.recv()
            assert "\u2028" not in message
            assert "\\u2028" in message
            [delivered] = json.loads(message[1:])
            assert delivered.startswith("MESSAGE\n")
            assert delivered.endswith("\x00")
            assert "over the websocket transport\u2028" in delivered
            await socket.send(json.dumps([stomp("DISCONNECT", ("receipt", "bye"))]))
            assert json.loads((await socket.recv())[1:])[0].startswith("RECEIPT\nreceipt-id:bye")
            assert await socket.recv() == 'c[1000,""]'  # the SockJS close, then the socket's
            with pytest.raises(ConnectionClosed):
                await socket.recv()
        assert socket.close_code == 1000
    await eventually(lambda: edge.edge.clients == {}, what="the connection gone")


async def test_the_websocket_transport_refusals(world: Any) -> None:
    edge = await start_edge(world)
    url = f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws/000/{uuid.uuid4().hex}/websocket"
    async with connect(url, ping_interval=None) as socket:
        async with asyncio.timeout(WITHIN):
            assert await socket.recv() == "o"
            await socket.send(json.dumps([connect_frame("garbage")]))
            [error] = json.loads((await socket.recv())[1:])
            assert error.startswith("ERROR\n")
            assert await socket.recv() == 'c[1008,"unauthenticated"]'
            with pytest.raises(ConnectionClosed):
                await socket.recv()
        assert socket.close_code == 1008
    async with connect(url.replace("/000/", "/001/"), ping_interval=None) as socket:
        async with asyncio.timeout(WITHIN):
            assert await socket.recv() == "o"
            await socket.send("CONNECT\n\n\x00")  # STOMP as it is: not SockJS
            with pytest.raises(ConnectionClosed):
                await socket.recv()
        assert socket.close_code == 1002
    await eventually(lambda: edge.edge.clients == {}, what="both connections gone")


async def read_to_the_close(socket: ClientConnection) -> list[str]:
    """Every message until the socket closes."""
    messages: list[str] = []
    async with asyncio.timeout(WITHIN):
        with contextlib.suppress(ConnectionClosed):
            while True:
                message = await socket.recv()
                assert isinstance(message, str)
                messages.append(message)
    return messages


async def test_a_slow_reader_of_the_websocket_transport_gets_the_sockjs_close(
    world: Any,
) -> None:
    chat = await world.chat()
    edge = await start_edge(world, max_outbound_bytes=64 * 1024, slow_close_seconds=5.0)
    url = f"ws://127.0.0.1:{edge.edge_server.settings.port}/ws/000/{uuid.uuid4().hex}/websocket"
    async with connect(url, ping_interval=None, max_queue=4) as socket:
        async with asyncio.timeout(WITHIN):
            assert await socket.recv() == "o"
            await socket.send(
                json.dumps(
                    [
                        connect_frame(chat.bob_token),
                        stomp(
                            "SUBSCRIBE",
                            ("id", "t"),
                            ("destination", chat.topic),
                            ("receipt", "s"),
                        ),
                    ]
                )
            )
            received: list[str] = []
            while len(received) < 2:  # CONNECTED, then the receipt (one batch or two)
                received += json.loads((await socket.recv())[1:])
            assert [m.split("\n")[0] for m in received] == ["CONNECTED", "RECEIPT"]
        [session] = connections(edge)
        headers = {"x-event": "message", "x-session-id": str(chat.id)}
        body = b'{"pad":"' + b"x" * 8000 + b'"}'
        seq = 0
        async with asyncio.timeout(30):
            while session.ending is None:  # the client reads nothing meanwhile
                for _ in range(20):
                    seq += 1
                    await world.publish(
                        routing.session_key(chat.id), {**headers, "x-seq": seq}, body
                    )
                await asyncio.sleep(0.01)
        assert session.ending is Disconnect.SLOW_CONSUMER
        messages = await read_to_the_close(socket)  # batches, the SockJS close, the close
        assert all(message.startswith("a[") for message in messages[:-1])
        assert messages[-1] == 'c[1008,"client too slow: outbound buffer full"]'
        assert socket.close_code == 1008
    await eventually(lambda: edge.edge.clients == {}, what="the slow one gone")


# -- one port --------------------------------------------------------------------------------------


async def test_the_port_serves_sockjs_next_to_ws_healthz_and_metrics(
    world: Any, clients: Clients
) -> None:
    edge = await start_edge(world)
    token = world.token("port@example.com")
    raw = await world.raw(edge, token)  # STOMP over /ws
    await raw.subscribe("/user/queue/ack", ("receipt", "raw"))
    assert (await raw.next_frame()).header("receipt-id") == "raw"
    port = edge.edge_server.settings.port
    session = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=base(edge), timeout=WITHIN) as http:
        # a POST under /ws/ reaches the HTTP server (the WebSocket server has no POST)
        polled = await http.post(f"/ws/000/{session}/xhr")
        assert (polled.status_code, polled.content) == (200, b"o\n")
        # a plain GET of a websocket transport, on a new connection, reaches the WebSocket
        # server, which wants an upgrade
        async with httpx.AsyncClient(base_url=base(edge), timeout=WITHIN) as fresh:
            plain = await fresh.get(f"/ws/000/{uuid.uuid4().hex}/websocket")
            assert plain.status_code == 426
    for path in ("/healthz", "/readyz", "/metrics"):
        async with httpx.AsyncClient(base_url=base(edge), timeout=WITHIN) as fresh:
            answer = await fresh.get(path)
            assert answer.status_code == 200, path
            if path == "/metrics":
                assert "chat_ws_connections 2.0" in answer.text  # /ws and the SockJS session
    # the upgrade reaches the WebSocket server: the websocket transport
    url = f"ws://127.0.0.1:{port}/ws/000/{uuid.uuid4().hex}/websocket?access_token={token}"
    async with connect(url, ping_interval=None) as socket:
        async with asyncio.timeout(WITHIN):
            assert await socket.recv() == "o"
            await socket.send(json.dumps([connect_frame()]))  # the URL's token
            assert json.loads((await socket.recv())[1:])[0].startswith("CONNECTED\n")
    # and /ws still is STOMP
    await raw.subscribe("/user/queue/error", ("receipt", "still"))
    assert (await raw.next_frame()).header("receipt-id") == "still"


async def test_health_and_metrics_answer_on_a_connection_that_served_sockjs(
    world: Any,
) -> None:
    edge = await start_edge(world)
    limits = httpx.Limits(max_connections=1)  # one keep-alive connection for every request
    async with httpx.AsyncClient(base_url=base(edge), timeout=WITHIN, limits=limits) as http:
        info = await http.get("/ws/info")
        assert info.status_code == 200
        assert info.headers.get("connection", "keep-alive") != "close"
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await http.get(path)).status_code == 200, path


async def test_a_request_line_that_never_ends_is_dropped(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ports, "REQUEST_LINE_SECONDS", 0.3)
    edge = await start_edge(world)
    port = edge.edge_server.settings.port
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /ws/000/slow/xhr HTTP/1.1")  # and then nothing
        await writer.drain()
        got = bytearray()
        async with asyncio.timeout(5):
            with contextlib.suppress(ConnectionResetError):
                while data := await reader.read(100):
                    got += data
        assert got == b""  # dropped without an answer
        assert time.monotonic() - started >= 0.3
    finally:
        writer.close()
    async with httpx.AsyncClient(timeout=WITHIN) as http:  # a prompt client is served
        assert (await http.get(f"{base(edge)}/ws/info")).status_code == 200
