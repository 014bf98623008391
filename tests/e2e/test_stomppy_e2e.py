"""stomp.py (its WebSocket transport, unmodified) against the whole stack: through the gateway's
``/ws`` and, for the cross-edge case, straight to a second ws-edge instance."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import stomp
from stomp.utils import Frame

from .conftest import Chat, Stack, open_chat, second_edge

pytestmark = pytest.mark.e2e

WITHIN = 10.0  # seconds any single frame may take to arrive


class _Frames(stomp.ConnectionListener):  # type: ignore[misc]  # stomp.py is untyped: Any
    """Every frame the server sends, in arrival order, on a thread-safe queue."""

    def __init__(self) -> None:
        self.frames: queue.Queue[Frame] = queue.Queue()
        self.disconnected = threading.Event()

    def on_connected(self, frame: Frame) -> None:
        self.frames.put(frame)

    def on_message(self, frame: Frame) -> None:
        self.frames.put(frame)

    def on_receipt(self, frame: Frame) -> None:
        self.frames.put(frame)

    def on_error(self, frame: Frame) -> None:
        self.frames.put(frame)

    def on_disconnected(self) -> None:
        self.disconnected.set()


class StompPy:
    """One stomp.py ``WSStompConnection`` and what it received. Frames a wait skips over are
    held back and handed out first by the next wait, so that no frame is lost between waits."""

    def __init__(self, connection: stomp.WSStompConnection, listener: _Frames) -> None:
        self.connection = connection
        self.listener = listener
        self.connected = Frame("")  # the CONNECTED frame, once open
        self._held: list[Frame] = []
        self._ids = iter(range(1, 1 << 30))

    @classmethod
    def open(
        cls,
        port: int,
        token: str,
        *,
        via: str = "passcode",
        with_connect_command: bool = False,
    ) -> StompPy:
        """Connect to ``ws://127.0.0.1:PORT/ws``; the token goes in the CONNECT frame's
        ``passcode`` (``via="passcode"``) or ``Authorization`` header (``"connect-header"``),
        the handshake's ``Authorization`` header (``"handshake"``) or the ``access_token``
        query parameter (``"query"``). Raises ConnectionError with an ERROR frame's message."""
        path = f"/ws?access_token={token}" if via == "query" else "/ws"
        handshake = {"Authorization": f"Bearer {token}"} if via == "handshake" else None
        connection = stomp.WSStompConnection(
            [("127.0.0.1", port)],
            ws_path=path,
            header=handshake,
            heartbeats=(10_000, 10_000),
            timeout=30,  # the socket's; the server's heart-beats keep it from idling that long
            reconnect_attempts_max=1,
        )
        listener = _Frames()
        connection.set_listener("frames", listener)
        client = cls(connection, listener)
        headers = {"Authorization": f"Bearer {token}"} if via == "connect-header" else {}
        connection.connect(
            passcode=token if via == "passcode" else None,
            headers=headers,
            wait=False,  # the bounded wait below instead of stomp.py's unbounded one
            with_connect_command=with_connect_command,
        )
        reply = client.next_frame()
        if reply.cmd != "CONNECTED":
            client.close()
            raise ConnectionError(f"STOMP CONNECT refused: {reply.headers.get('message')}")
        client.connected = reply
        return client

    def next_frame(self, within: float = WITHIN) -> Frame:
        if self._held:
            return self._held.pop(0)
        try:
            return self.listener.frames.get(timeout=within)
        except queue.Empty:
            raise TimeoutError(f"no frame within {within}s") from None

    def take(self, count: int, command: str = "MESSAGE", within: float = WITHIN) -> list[Frame]:
        """The next ``count`` frames of ``command``; other frames are held for later."""
        deadline = time.monotonic() + within
        got: list[Frame] = []
        skipped: list[Frame] = []
        try:
            while len(got) < count:
                frame = self.next_frame(max(0.0, deadline - time.monotonic()))
                (got if frame.cmd == command else skipped).append(frame)
        except TimeoutError:
            raise TimeoutError(
                f"{len(got)}/{count} {command} frames within {within}s; also got "
                f"{[(f.cmd, f.headers.get('message')) for f in skipped]}"
            ) from None
        finally:
            self._held = skipped + self._held
        return got

    def receipt(self, receipt_id: str, within: float = WITHIN) -> Frame:
        """Wait for the RECEIPT of ``receipt_id``; frames before it are held for later."""
        deadline = time.monotonic() + within
        skipped: list[Frame] = []
        try:
            while True:
                frame = self.next_frame(max(0.0, deadline - time.monotonic()))
                if frame.cmd == "RECEIPT" and frame.headers.get("receipt-id") == receipt_id:
                    return frame
                skipped.append(frame)
        except TimeoutError:
            raise TimeoutError(
                f"no RECEIPT {receipt_id} within {within}s; got "
                f"{[(f.cmd, f.headers.get('message')) for f in skipped]}"
            ) from None
        finally:
            self._held = skipped + self._held

    def drain(self, seconds: float) -> list[Frame]:
        """Everything held or arriving within ``seconds`` (to show nothing more came)."""
        got, self._held = self._held, []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self.listener.frames.get(timeout=left))
            except queue.Empty:
                break
        return got

    def subscribe(self, destination: str, **headers: str) -> str:
        """SUBSCRIBE with a receipt and wait for it: the server answers once it is bound."""
        sub_id = f"sub-{next(self._ids)}"
        receipt = f"subscribed-{uuid.uuid4().hex[:8]}"
        self.connection.subscribe(destination, sub_id, headers={**headers, "receipt": receipt})
        self.receipt(receipt)
        return sub_id

    def send_chat(self, session_id: str, content: str) -> tuple[str, Frame]:
        """``/app/chat.send`` with a receipt; waits for the RECEIPT. (clientMessageId, it)"""
        cid = str(uuid.uuid4())
        receipt = f"send-{cid}"
        body = json.dumps({"sessionId": session_id, "content": content, "clientMessageId": cid})
        self.connection.send(
            "/app/chat.send", body, content_type="application/json", headers={"receipt": receipt}
        )
        return cid, self.receipt(receipt)

    def close(self) -> None:
        """DISCONNECT with a receipt when still connected; the socket is closed either way."""
        if self.connection.is_connected():
            self.connection.disconnect()
            self.listener.disconnected.wait(5)
        self.connection.transport.disconnect_socket()


@pytest.fixture
def chat(stack: Stack) -> Chat:
    return open_chat(stack, "py")


@pytest.fixture
def clients() -> Iterator[list[StompPy]]:
    opened: list[StompPy] = []
    yield opened
    for client in opened:
        client.close()


def gateway_port(stack: Stack) -> int:
    port = urlsplit(stack.gateway).port
    assert port is not None
    return port


def rest_send(stack: Stack, token: str, session_id: str, content: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{stack.gateway}/api/chat/message",
        json={"sessionId": session_id, "content": content, "clientMessageId": str(uuid.uuid4())},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def history(stack: Stack, token: str, session_id: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{stack.gateway}/api/chat/{session_id}/history",
        params={"limit": 200},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["messages"])


@pytest.fixture(scope="module")
def second_edge_port(stack: Stack) -> Iterator[int]:
    with second_edge(stack) as port:
        yield port


@pytest.mark.parametrize(
    ("via", "with_connect_command"),
    [
        ("passcode", False),
        ("passcode", True),
        ("connect-header", False),
        ("handshake", False),
        ("query", False),
    ],
)
def test_connects_with_each_token_source(
    stack: Stack, chat: Chat, clients: list[StompPy], via: str, with_connect_command: bool
) -> None:
    client = StompPy.open(
        gateway_port(stack), chat.alice_token, via=via, with_connect_command=with_connect_command
    )
    clients.append(client)
    assert client.connected.headers.get("version") == "1.2"
    sx, sy = (int(v) for v in client.connected.headers["heart-beat"].split(","))
    assert min(sx, sy) > 0  # heart-beats both ways were negotiated
    assert client.connection.is_connected()


def test_a_bad_token_is_refused_with_an_error_frame(stack: Stack) -> None:
    with pytest.raises(ConnectionError, match=r"token|authenticat|malformed"):
        StompPy.open(gateway_port(stack), "garbage")


def test_a_rest_message_reaches_the_topic_and_the_user_queue(
    stack: Stack, chat: Chat, clients: list[StompPy]
) -> None:
    bob = StompPy.open(gateway_port(stack), chat.bob_token)
    clients.append(bob)
    topic_sub = bob.subscribe(f"/topic/session.{chat.id}")
    queue_sub = bob.subscribe("/user/queue/messages")
    sent = rest_send(stack, chat.alice_token, chat.id, "hello from REST")
    frames = bob.take(2)
    assert {f.headers["destination"] for f in frames} == {
        f"/topic/session.{chat.id}",
        "/user/queue/messages",
    }
    assert {f.headers["subscription"] for f in frames} == {topic_sub, queue_sub}
    for frame in frames:
        assert frame.headers["x-event"] == "message"
        assert frame.headers["x-session-id"] == chat.id
        assert frame.headers["x-seq"] == str(sent["seq"])
        assert frame.headers["content-type"].startswith("application/json")
        assert frame.headers["message-id"]
        body = json.loads(frame.body)
        assert (body["messageId"], body["content"], body["senderEmail"]) == (
            sent["messageId"],
            "hello from REST",
            chat.alice,
        )


def test_chat_send_is_receipted_after_the_commit_then_delivered(
    stack: Stack, chat: Chat, clients: list[StompPy]
) -> None:
    alice = StompPy.open(gateway_port(stack), chat.alice_token)
    bob = StompPy.open(gateway_port(stack), chat.bob_token)
    clients += [alice, bob]
    alice.subscribe("/user/queue/ack")
    bob.subscribe(f"/topic/session.{chat.id}")
    bob.subscribe("/user/queue/messages")
    cid, receipt = alice.send_chat(chat.id, "over stomp.py")
    assert receipt.headers["receipt-id"] == f"send-{cid}"
    # The RECEIPT means committed: the very next read sees the message.
    stored = [m for m in history(stack, chat.bob_token, chat.id) if m["clientMessageId"] == cid]
    assert len(stored) == 1, stored
    [ack] = alice.take(1)
    assert ack.headers["destination"] == "/user/queue/ack"
    assert json.loads(ack.body)["messageId"] == stored[0]["messageId"]
    frames = bob.take(2)
    assert {f.headers["destination"] for f in frames} == {
        f"/topic/session.{chat.id}",
        "/user/queue/messages",
    }
    for frame in frames:
        body = json.loads(frame.body)
        assert (body["messageId"], body["clientMessageId"], body["content"]) == (
            stored[0]["messageId"],
            cid,
            "over stomp.py",
        )
        assert frame.headers["x-seq"] == str(stored[0]["seq"])


def test_resume_after_a_disconnect_misses_nothing_and_repeats_nothing(
    stack: Stack, chat: Chat, clients: list[StompPy]
) -> None:
    port = gateway_port(stack)
    topic = f"/topic/session.{chat.id}"
    alice = StompPy.open(port, chat.alice_token)
    bob = StompPy.open(port, chat.bob_token)
    clients += [alice, bob]
    bob.subscribe(topic)
    rest_send(stack, chat.alice_token, chat.id, "m1")
    alice.send_chat(chat.id, "m2")
    seen = bob.take(2)
    assert [json.loads(f.body)["content"] for f in seen] == ["m1", "m2"]
    last_seen = int(seen[-1].headers["x-seq"])
    bob.close()
    assert bob.listener.disconnected.wait(5), "DISCONNECT did not end the connection"

    for i in range(3, 9):  # while bob is away: over REST and over STOMP, alternately
        if i % 2:
            rest_send(stack, chat.alice_token, chat.id, f"m{i}")
        else:
            alice.send_chat(chat.id, f"m{i}")

    again = StompPy.open(port, chat.bob_token, via="handshake")
    clients.append(again)
    again.subscribe(topic, **{"x-resume-after-seq": str(last_seen)})
    for i in range(9, 13):  # live ones, racing the replay
        if i % 2:
            rest_send(stack, chat.alice_token, chat.id, f"m{i}")
        else:
            alice.send_chat(chat.id, f"m{i}")
    frames = again.take(10, within=20)
    extra = [f for f in again.drain(1.0) if f.cmd == "MESSAGE"]
    assert extra == [], [(f.headers.get("x-seq"), f.body) for f in extra]
    seqs = [int(f.headers["x-seq"]) for f in frames]
    assert seqs == list(range(last_seen + 1, last_seen + 11))  # every one, once, in order
    assert [json.loads(f.body)["content"] for f in frames] == [f"m{i}" for i in range(3, 13)]
    assert len({json.loads(f.body)["messageId"] for f in frames}) == 10
    assert all(f.headers["destination"] == topic for f in frames)


def test_a_non_participant_subscribe_is_refused_with_an_error_frame(
    stack: Stack, chat: Chat, clients: list[StompPy]
) -> None:
    eve = StompPy.open(gateway_port(stack), stack.token(f"eve.py.{uuid.uuid4().hex[:6]}@x.com"))
    clients.append(eve)
    eve.connection.subscribe(f"/topic/session.{chat.id}", "sub-eve", headers={"receipt": "r"})
    frame = eve.next_frame()
    assert frame.cmd == "ERROR", (frame.cmd, frame.headers)
    assert "participant" in frame.headers.get("message", "")
    assert eve.listener.disconnected.wait(5), "the connection stayed open after the ERROR"
    rest_send(stack, chat.alice_token, chat.id, "not for eve")
    assert [f.cmd for f in eve.drain(0.5)] == []  # no RECEIPT, no MESSAGE


def test_a_send_through_one_edge_reaches_a_client_of_another(
    stack: Stack, chat: Chat, clients: list[StompPy], second_edge_port: int
) -> None:
    alice = StompPy.open(gateway_port(stack), chat.alice_token)  # the gateway's edge
    bob = StompPy.open(second_edge_port, chat.bob_token, via="query")  # the second edge
    clients += [alice, bob]
    alice.subscribe(f"/topic/session.{chat.id}")
    bob.subscribe(f"/topic/session.{chat.id}")
    bob.subscribe("/user/queue/messages")

    cid, _ = alice.send_chat(chat.id, "from edge 1")
    frames = bob.take(2)
    assert {f.headers["destination"] for f in frames} == {
        f"/topic/session.{chat.id}",
        "/user/queue/messages",
    }
    assert all(json.loads(f.body)["clientMessageId"] == cid for f in frames)
    [own] = alice.take(1)
    assert json.loads(own.body)["clientMessageId"] == cid

    reply_cid, _ = bob.send_chat(chat.id, "from edge 2")  # and back the other way
    [reply] = alice.take(1)
    assert json.loads(reply.body)["clientMessageId"] == reply_cid
    assert int(reply.headers["x-seq"]) == int(own.headers["x-seq"]) + 1
