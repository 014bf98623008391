"""The destinations ws-edge serves (``ws_edge.destinations``) and what it does with any other,
on a whole ``ClientSession`` fed by a scripted socket, with the in-memory broker and stand-ins
for the token check and session-svc: every listed destination is served, anything else (a
crafted user queue, a broker name, a wildcard, another spelling of a topic) is an ERROR and
a close, and nothing is bound or published for it."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest
from chat_stomp.frames import SERVER_COMMANDS, Frame, serialize
from chat_stomp.parser import FrameParser, Limits
from websockets.protocol import State

from chat_common import routing
from chat_common.dto import Membership
from chat_common.errors import AuthenticationFailed
from chat_common.jwt_verify import UserIdentity
from ws_edge import destinations
from ws_edge.broker import MemoryBroker
from ws_edge.client import ClientSession
from ws_edge.edge import Edge
from ws_edge.sender import Sender
from ws_edge.settings import Settings

ALICE = "alice@example.com"
MINE = uuid.UUID("5f0c4d2e-3a7b-4c1d-9e8f-0a1b2c3d4e5f")  # Alice's session
OTHERS = uuid.UUID("6a1d5e3f-4b8c-4d2e-8f90-1b2c3d4e5f60")  # one she is not in (fixed: test ids)
TOKEN = "alice-token"


class Users:
    async def identify(self, token: str) -> UserIdentity:
        if token != TOKEN:
            raise AuthenticationFailed("token rejected", code="TOKEN_INVALID")
        return UserIdentity(ALICE, time.time() + 3600)


class Upstream:
    """session-svc: Alice is a participant of MINE only."""

    def __init__(self) -> None:
        self.asked: list[uuid.UUID] = []

    async def membership(self, email: str, token: str, session: uuid.UUID) -> Membership | None:
        self.asked.append(session)
        member = SimpleNamespace(blocked_by=(), state="OPEN")  # an open session's answer
        return cast(Membership, member) if (email, session) == (ALICE, MINE) else None


class Transport:
    """An open transport whose kernel buffer always has room."""

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        pass


@dataclass
class Protocol:
    """The WebSocket protocol of an open connection, recording each text message."""

    sent: list[str]
    state: State = State.OPEN

    def send_text(self, data: bytes) -> None:
        self.sent.append(data.decode())

    def data_to_send(self) -> list[bytes]:
        return []


@dataclass
class Socket:
    """What the edge reads (one message per item) and writes, directly or by ``send``."""

    inbound: list[bytes]
    sent: list[str] = field(default_factory=list)
    close_code: int | None = None
    transport: Transport = field(default_factory=Transport)
    send_in_progress: None = None

    @property
    def protocol(self) -> Protocol:
        return Protocol(self.sent)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._read()

    async def _read(self) -> AsyncIterator[bytes]:
        for data in self.inbound:
            yield data

    async def send(self, data: bytes | str, text: bool = False) -> None:
        self.sent.append(data.decode() if isinstance(data, bytes) else data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_code = code

    def outlet(self, max_bytes: int, slow_close_seconds: float) -> Sender:
        return Sender(self, max_bytes, slow_close_seconds)  # type: ignore[arg-type]

    def abort(self) -> None:
        self.transport.abort()


@dataclass
class Outcome:
    frames: list[Frame]
    close_code: int | None
    broker: MemoryBroker
    upstream: Upstream

    @property
    def commands(self) -> list[str]:
        return [f.command for f in self.frames]


def connect(token: str = TOKEN) -> Frame:
    return Frame(
        "CONNECT",
        (("accept-version", "1.2"), ("host", "/"), ("heart-beat", "0,0"), ("passcode", token)),
    )


def subscribe(destination: str, sub_id: str = "s1") -> Frame:
    return Frame("SUBSCRIBE", (("id", sub_id), ("destination", destination), ("receipt", "r")))


def send(destination: str, body: dict[str, Any]) -> Frame:
    return Frame(
        "SEND", (("destination", destination), ("receipt", "r")), msgspec.json.encode(body)
    )


async def run(*messages: list[Frame]) -> Outcome:
    """One connection: each list of frames is one WebSocket message."""
    broker, upstream = MemoryBroker(), Upstream()
    edge = Edge(Settings(instance_id="t"), broker, upstream, Users())  # type: ignore[arg-type]
    broker.handler = edge.on_event
    socket = Socket([b"".join(serialize(f) for f in m) for m in messages])
    await ClientSession(edge, socket, None).run()
    parser = FrameParser(Limits(), commands=SERVER_COMMANDS)
    frames = [f for s in socket.sent for f in parser.feed(s.encode()) if isinstance(f, Frame)]
    return Outcome(frames, socket.close_code, broker, upstream)


def fill(pattern: str, session: uuid.UUID = MINE) -> str:
    return pattern.replace(destinations.SESSION_ID, str(session))


def test_the_table_names_every_destination_once() -> None:
    assert destinations.SUBSCRIBE == (
        "/topic/session.{sessionId}",
        "/user/queue/messages",
        "/user/queue/ack",
        "/user/queue/error",
        "/user/queue/presence",
        "/user/queue/keys",
    )
    assert destinations.SEND == (
        "/app/chat.send",
        "/app/chat.typing",
        "/app/chat.read",
        "/app/chat.edit",
        "/app/chat.delete",
    )


async def test_every_listed_subscription_is_served() -> None:
    frames = [subscribe(fill(d), f"s{i}") for i, d in enumerate(destinations.SUBSCRIBE)]
    outcome = await run([connect()], *([f] for f in frames))
    assert outcome.commands == ["CONNECTED"] + ["RECEIPT"] * len(frames)
    assert outcome.broker.binds == [routing.user_key(ALICE), routing.session_key(MINE)]


async def test_every_listed_send_is_served() -> None:
    """A body that does not parse is an INVALID_INPUT message on the error queue (so the
    destination has a handler), not an ERROR."""
    sends = [[send(d, {"nonsense": True})] for d in destinations.SEND]
    outcome = await run([connect()], [subscribe("/user/queue/error")], *sends)
    assert outcome.commands == ["CONNECTED", "RECEIPT"] + ["MESSAGE"] * len(sends)
    for frame in outcome.frames[2:]:
        assert frame.header("destination") == "/user/queue/error"
        assert msgspec.json.decode(frame.body)["code"] == "INVALID_INPUT"
    assert outcome.broker.sends == []


CRAFTED_SUBSCRIPTIONS = [
    f"/user/{ALICE}/queue/messages",
    "/user/bob@example.com/queue/messages",
    "/user/queue/messages/",
    "/user//queue/messages",
    "/user/queue/../queue/messages",
    "/USER/QUEUE/MESSAGES",
    "/user/queue/*",
    "/user/queue/#",
    "/queue/messages",
    "/exchange/chat.events/#",
    f"/exchange/chat.events/{routing.user_key('bob@example.com')}",
    "/amq/queue/chat.send",
    "/topic/#",
    "/topic/session.*",
    f"/topic/{routing.user_key('bob@example.com')}",
    f"/topic/session.{str(MINE).upper()}",
    f"/topic/session.{MINE.hex}",
    f"/topic/session.{{{MINE}}}",
    f"/topic/session.urn:uuid:{MINE}",
    f"/topic/session.{MINE}/../session.{OTHERS}",
    f"/topic/session.{MINE} ",
    "/app/chat.send",
]


@pytest.mark.parametrize("destination", CRAFTED_SUBSCRIPTIONS, ids=repr)
async def test_a_crafted_subscription_is_an_error_and_binds_nothing(destination: str) -> None:
    outcome = await run([connect()], [subscribe(destination)], [subscribe("/user/queue/messages")])
    assert outcome.commands == ["CONNECTED", "ERROR"]
    assert outcome.frames[1].header("message") == f"unknown destination {destination}"
    assert outcome.close_code == 1008
    assert outcome.broker.binds == [routing.user_key(ALICE)]
    assert outcome.upstream.asked == []


async def test_the_topic_of_a_session_one_is_not_in_is_refused() -> None:
    outcome = await run([connect()], [subscribe(fill(destinations.SESSION_TOPIC, OTHERS))])
    assert outcome.commands == ["CONNECTED", "ERROR"]
    assert outcome.frames[1].header("message") == "not a participant of this session"
    assert outcome.close_code == 1008
    assert outcome.broker.binds == [routing.user_key(ALICE)]


CRAFTED_SENDS = [
    "/app/chat.send/",
    "/app/../app/chat.send",
    "/APP/CHAT.SEND",
    "/app/chat.*",
    "/queue/chat.send",
    "/amq/queue/chat.send",
    f"/exchange/chat.events/session.{MINE}",
    f"/topic/session.{MINE}",
    "/user/queue/messages",
    "/user/bob@example.com/queue/messages",
]


@pytest.mark.parametrize("destination", CRAFTED_SENDS, ids=repr)
async def test_a_send_elsewhere_is_an_error_and_publishes_nothing(destination: str) -> None:
    body = {"sessionId": str(MINE), "content": "hi", "clientMessageId": str(uuid.uuid4())}
    outcome = await run([connect()], [send(destination, body)])
    assert outcome.commands == ["CONNECTED", "ERROR"]
    assert outcome.frames[1].header("message") == f"unknown destination {destination}"
    assert outcome.close_code == 1008
    assert outcome.broker.sends == []


@pytest.mark.parametrize("token", ["garbage", ""])
async def test_frames_behind_a_refused_connect_are_never_acted_on(token: str) -> None:
    body = {"sessionId": str(MINE), "content": "hi", "clientMessageId": str(uuid.uuid4())}
    behind = [subscribe(fill(d), f"s{i}") for i, d in enumerate(destinations.SUBSCRIBE)]
    behind += [send(d, body) for d in destinations.SEND]
    outcome = await run([connect(token), *behind])
    assert outcome.commands == ["ERROR"]
    assert outcome.close_code == 1008
    assert outcome.broker.binds == []
    assert outcome.broker.sends == []
    assert outcome.upstream.asked == []
