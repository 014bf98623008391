"""Who may use which STOMP destination: every destination of ws-edge, for every kind of caller,
through the gateway's ``/ws`` on the whole stack.

The destinations are enumerated from ws-edge itself (``ws_edge.destinations``), so a
destination added there without a row in MATRIX fails this suite. The session under test is
Alice's dating session with Bob. The callers: Alice (a participant); Eve (a user with a session
of her own, not in this one); Carol (a profile for another intent: a freelance session with the
same peer, Bob); and CONNECTs with no token, a garbage one, a forged one (Alice's claims signed
with the chat service's key under FlairBit's ``kid``), an expired one, FlairBit's service JWT
and the chat service's JWT.

What a refusal looks like (``../shared/DESIGN.md`` §5, ``services/ws-edge/README.md``):

- a SUBSCRIBE the caller may not make: an ERROR frame, then the connection closes (1008), and
  nothing published meanwhile reaches it;
- a SEND about a session the caller is not in: a MESSAGE on the caller's ``/user/queue/error``
  (``NOT_PARTICIPANT``, with the SEND's ``receipt-id``) and never a RECEIPT (errors about what
  a client sent are messages, not ERROR frames); nothing stored, nothing delivered;
- no, bad, expired or service token at CONNECT: ERROR instead of CONNECTED, closed, and a frame
  pipelined in the same WebSocket message as the CONNECT is never acted on;
- ``/user/queue/*`` is always the connected user's own: a subscriber gets only its own events,
  never those of another user (even one sharing its peer); a crafted destination naming
  another user, a broker exchange or queue, a wildcard or a traversal is an ERROR, then close.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import jwt
import pytest
from chat_stomp.frames import SERVER_COMMANDS, Frame, serialize
from chat_stomp.parser import FrameParser
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from chat_common import routing
from chat_common.jwt_sign import ServiceTokenSigner, load_private_key
from chat_testing.stomp import BENCH_LIMITS, StompClient
from ws_edge import destinations

from .conftest import Stack

pytestmark = pytest.mark.e2e

WAIT = 10.0  # for a frame that must come
CASE_TIMEOUT = 45.0  # a whole case
QUIET = 0.3  # for a frame that must not come, once the pipeline behind it has been flushed

Outcome = Literal["allowed", "own_only", "refused", "not_participant", "unauthenticated"]
USERS = ("participant", "other_user", "other_intent_user")
ANONYMOUS = (
    "no_token",
    "garbage_token",
    "forged_token",
    "expired_token",
    "flairbit_service_token",
    "chat_service_token",
)
CALLERS = USERS + ANONYMOUS

PARTICIPANTS_ONLY: dict[str, Outcome] = {
    "participant": "allowed",
    "other_user": "refused",
    "other_intent_user": "refused",
    **dict.fromkeys(ANONYMOUS, "unauthenticated"),
}
OWN_QUEUE: dict[str, Outcome] = {
    **dict.fromkeys(USERS, "own_only"),
    **dict.fromkeys(ANONYMOUS, "unauthenticated"),
}
PARTICIPANTS_SEND: dict[str, Outcome] = {
    **PARTICIPANTS_ONLY,
    "other_user": "not_participant",
    "other_intent_user": "not_participant",
}
TOPIC = destinations.SESSION_TOPIC
MATRIX: dict[tuple[str, str], dict[str, Outcome]] = {
    ("SUBSCRIBE", TOPIC): PARTICIPANTS_ONLY,
    ("SUBSCRIBE", "/user/queue/messages"): OWN_QUEUE,
    ("SUBSCRIBE", "/user/queue/ack"): OWN_QUEUE,
    ("SUBSCRIBE", "/user/queue/error"): OWN_QUEUE,
    ("SUBSCRIBE", "/user/queue/presence"): OWN_QUEUE,
    ("SUBSCRIBE", "/user/queue/keys"): OWN_QUEUE,
    ("SEND", "/app/chat.send"): PARTICIPANTS_SEND,
    ("SEND", "/app/chat.typing"): PARTICIPANTS_SEND,
    ("SEND", "/app/chat.read"): PARTICIPANTS_SEND,
    ("SEND", "/app/chat.edit"): PARTICIPANTS_SEND,
    ("SEND", "/app/chat.delete"): PARTICIPANTS_SEND,
}
CHANGES = ("/app/chat.edit", "/app/chat.delete")
CASES = [(frame, dest, caller) for (frame, dest), row in MATRIX.items() for caller in row]


# -- the world: users, tokens, sessions, made afresh for every case ----------------------------
#
# Every case has users of its own: the stack's per-user limits (sends per second, WebSocket
# connections per second) are real rules, and users shared by the ~90 cases of this module
# would spend them faster than they refill, so that a case's outcome would depend on how fast
# the cases before it ran (the refused sentinel SEND of issue 13: Bob's SEND_RATE_LIMITED,
# answered by an ERROR and a 1008 close because he has no /user/queue/error subscription).


@dataclass(frozen=True)
class Role:
    """A user caller: who they are, their own chat, and a foreign user whose events they must
    never see (Carol's foreign user is Bob: her own peer, but in another intent)."""

    me: str
    peer: str
    session: str
    foreign: str
    foreign_peer: str
    foreign_session: str


ROLES = {
    "participant": Role("alice", "bob", "dating", "eve", "frank", "eve"),
    "other_user": Role("eve", "frank", "eve", "alice", "bob", "dating"),
    "other_intent_user": Role("carol", "bob", "carol", "bob", "alice", "dating"),
}
MEMBERS = {"dating": {"alice", "bob"}, "eve": {"eve", "frank"}, "carol": {"carol", "bob"}}


@dataclass(frozen=True)
class World:
    stack: Stack
    emails: dict[str, str]
    tokens: dict[str, str]
    sessions: dict[str, str]  # "dating" (Alice and Bob, the one under test), "eve", "carol"

    @property
    def url(self) -> str:
        return self.stack.gateway.replace("http://", "ws://") + "/ws"

    @property
    def s1(self) -> str:
        return self.sessions["dating"]

    def outside(self, name: str) -> str:
        """A session ``name`` is not a participant of."""
        return next(self.sessions[s] for s, members in MEMBERS.items() if name not in members)


@pytest.fixture
async def world(stack: Stack) -> World:
    tag = uuid.uuid4().hex[:6]
    names = ("alice", "bob", "eve", "frank", "carol")
    emails = {n: f"{n}.stompauthz.{tag}@example.com" for n in names}
    openings = {
        "dating": ("alice", "bob", "dating"),
        "eve": ("eve", "frank", "dating"),
        "carol": ("carol", "bob", "freelance"),
    }
    async with httpx.AsyncClient(timeout=10) as client:

        async def token(email: str) -> str:
            answer = await client.post(f"{stack.flairbit}/dev/token", json={"email": email})
            answer.raise_for_status()
            return str(answer.json()["token"])

        async def init(opener: str, peer: str, intent: str) -> str:
            answer = await client.post(
                f"{stack.gateway}/api/chat/init",
                json={"toEmail": emails[peer], "intent": intent},
                headers={"Authorization": f"Bearer {tokens[opener]}"},
            )
            assert answer.status_code == 200, answer.text
            return str(answer.json()["sessionId"])

        tokens = dict(
            zip(names, await asyncio.gather(*(token(emails[n]) for n in names)), strict=True)
        )
        opened = await asyncio.gather(*(init(*how) for how in openings.values()))
        sessions = dict(zip(openings, opened, strict=True))
        assert len(set(sessions.values())) == 3
        # One message, so that a read mark up to seq 1 is a sensible request. The case starts
        # once the broker has routed it (Alice's own queue got it), so it never reaches a
        # subscription the case makes.
        ws_url = stack.gateway.replace("http://", "ws://") + "/ws"
        alice = await StompClient.open(ws_url, headers=(("passcode", tokens["alice"]),))
        try:
            await alice.subscribe("/user/queue/messages", ("receipt", "bound"))
            assert (await alice.next_frame(WAIT)).command == "RECEIPT"
            first = await client.post(
                f"{stack.gateway}/api/chat/message",
                json={"sessionId": sessions["dating"], "content": "hi", "clientMessageId": cid()},
                headers={"Authorization": f"Bearer {tokens['bob']}"},
            )
            assert first.status_code == 200, first.text
            routed = await alice.next_frame(WAIT)
            assert body_of(routed)["messageId"] == first.json()["messageId"], routed.headers
        finally:
            await alice.close()
    return World(stack, emails, tokens, sessions)


def cid() -> str:
    return str(uuid.uuid4())


def anonymous_token(world: World, caller: str) -> str | None:
    stack = world.stack
    if caller == "no_token":
        return None
    if caller == "garbage_token":
        return "garbage"
    if caller == "expired_token":
        answer = httpx.post(
            f"{stack.flairbit}/dev/token",
            json={"email": world.emails["alice"], "ttlSeconds": -3600},
            timeout=5,
        )
        return str(answer.json()["token"])
    if caller == "flairbit_service_token":
        answer = httpx.post(f"{stack.flairbit}/dev/service-token", timeout=5)
        return str(answer.json()["token"])
    chat_key = load_private_key(stack.run_dir / "keys" / "chat_service_private.pem")
    if caller == "chat_service_token":
        return ServiceTokenSigner(chat_key, issuer="chat-service", audience="flairbit").token()
    assert caller == "forged_token"
    # Alice's claims as FlairBit would write them, under FlairBit's kid, signed with a key
    # that is not FlairBit's (the chat service's own)
    jwks = httpx.get(f"{stack.flairbit}/.well-known/jwks.json", timeout=5).json()
    claims = jwt.decode(world.tokens["alice"], options={"verify_signature": False})
    kid = jwks["keys"][0]["kid"]
    return jwt.encode(claims, chat_key, algorithm="RS256", headers={"kid": kid})


# -- a STOMP connection read frame by frame, with timeouts ------------------------------------


class Peer:
    """One STOMP connection through the gateway; frames are read one at a time (none is lost
    to a cancelled read), every wait is bounded."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self._parser = FrameParser(BENCH_LIMITS, commands=SERVER_COMMANDS)
        self._frames: deque[Frame] = deque()
        self._ids = 0

    @classmethod
    async def connect(cls, world: World, name: str) -> Peer:
        token = world.tokens[name]
        async with asyncio.timeout(WAIT):
            client = await StompClient.open(
                world.url, headers=(("Authorization", f"Bearer {token}"),)
            )
        return cls(client.socket)

    @classmethod
    async def raw(cls, world: World) -> Peer:
        """A socket with no STOMP CONNECT sent yet."""
        socket = await connect(
            world.url,
            subprotocols=[Subprotocol("v12.stomp")],
            max_size=1 << 20,
            ping_interval=None,
            open_timeout=WAIT,
        )
        return cls(socket)

    async def write(self, *frames: Frame) -> None:
        """Frames in one WebSocket message."""
        await self.socket.send(b"".join(serialize(f) for f in frames).decode())

    def next_id(self) -> str:
        self._ids += 1
        return f"sub-{self._ids}"

    async def subscribe(self, destination: str) -> str:
        """SUBSCRIBE and wait for its RECEIPT (sent once the subscription is authorised and
        bound): events published after this return reach it."""
        sub_id, receipt = self.next_id(), f"r-{uuid.uuid4().hex[:8]}"
        await self.write(subscribe_frame(sub_id, destination, receipt))
        frame = await self.next()
        assert frame.command == "RECEIPT", (frame.command, frame.header("message"))
        assert frame.header("receipt-id") == receipt
        return sub_id

    async def send(self, destination: str, body: dict[str, Any], receipt: str | None) -> None:
        await self.write(send_frame(destination, body, receipt))

    async def next(self, within: float = WAIT) -> Frame:
        async with asyncio.timeout(within):
            while not self._frames:
                data = await self.socket.recv()
                raw = data.encode() if isinstance(data, str) else data
                self._frames.extend(f for f in self._parser.feed(raw) if isinstance(f, Frame))
        return self._frames.popleft()

    async def message_on(self, destination: str, within: float = WAIT) -> Frame:
        """The next frame, which must be a MESSAGE on ``destination``."""
        frame = await self.next(within)
        assert frame.command == "MESSAGE", (frame.command, frame.header("message"))
        assert frame.header("destination") == destination, frame.header("destination")
        return frame

    async def quiet(self, within: float = QUIET) -> None:
        """Nothing arrives within ``within`` and the connection stays open."""
        with contextlib.suppress(TimeoutError):
            frame = await self.next(within)
            raise AssertionError(f"unexpected {frame.command}: {frame.headers} {frame.body!r}")

    async def until_closed(self, within: float = WAIT) -> tuple[list[Frame], int | None]:
        """Every frame until the server closes the connection, and the close code."""
        frames = []
        try:
            while True:
                frames.append(await self.next(within))
        except ConnectionClosed:
            pass
        return frames, self.socket.close_code

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(WAIT):
                await self.socket.close()


def subscribe_frame(sub_id: str, destination: str, receipt: str | None = None) -> Frame:
    headers = [("id", sub_id), ("destination", destination)]
    if receipt:
        headers.append(("receipt", receipt))
    return Frame("SUBSCRIBE", tuple(headers))


def send_frame(destination: str, body: dict[str, Any], receipt: str | None = None) -> Frame:
    headers = [("destination", destination), ("content-type", "application/json")]
    if receipt:
        headers.append(("receipt", receipt))
    return Frame("SEND", tuple(headers), json.dumps(body).encode())


def connect_frame(token: str | None) -> Frame:
    headers = [("accept-version", "1.2"), ("host", "/"), ("heart-beat", "0,0")]
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    return Frame("CONNECT", tuple(headers))


def body_of(frame: Frame) -> dict[str, Any]:
    value = json.loads(frame.body)
    assert isinstance(value, dict)
    return value


Opener = Callable[[str], Awaitable[Peer]]


@pytest.fixture
async def peers(world: World) -> AsyncIterator[Opener]:
    """Opens connections for one test (by user name) and closes them after it."""
    opened: list[Peer] = []

    async def open_as(name: str) -> Peer:
        peer = await Peer.connect(world, name)
        opened.append(peer)
        return peer

    yield open_as
    await asyncio.gather(*(p.close() for p in opened))


# -- what each call does to the session under test ---------------------------------------------


async def rest_send(
    world: World, name: str, session: str, content: str = "hello"
) -> dict[str, Any]:
    message_id = cid()  # also in the content: message-svc refuses the same content repeated
    async with httpx.AsyncClient(base_url=world.stack.gateway, timeout=WAIT) as client:
        answer = await client.post(
            "/api/chat/message",
            json={
                "sessionId": session,
                "content": f"{content} {message_id}",
                "clientMessageId": message_id,
            },
            headers={"Authorization": f"Bearer {world.tokens[name]}"},
        )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def publish_key(world: World, name: str) -> None:
    raw = (
        x25519.X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    async with httpx.AsyncClient(base_url=world.stack.gateway, timeout=WAIT) as client:
        answer = await client.put(
            "/api/chat/keys/authz",
            json={"algorithm": "X25519", "publicKey": text},
            headers={"Authorization": f"Bearer {world.tokens[name]}"},
        )
    assert answer.status_code == 201, answer.text


async def history_ids(world: World, name: str, session: str) -> list[str]:
    async with httpx.AsyncClient(base_url=world.stack.gateway, timeout=WAIT) as client:
        answer = await client.get(
            f"/api/chat/{session}/history",
            params={"limit": 200},
            headers={"Authorization": f"Bearer {world.tokens[name]}"},
        )
    assert answer.status_code == 200, answer.text
    return [m["clientMessageId"] for m in answer.json()["messages"]]


def body_for(world: World, destination: str, client_message_id: str) -> dict[str, Any]:
    """The body of a SEND to ``destination`` about the session under test."""
    if destination == "/app/chat.typing":
        return {"sessionId": world.s1, "typing": True}
    if destination == "/app/chat.read":
        return {"sessionId": world.s1, "upToSeq": 1}
    if destination in CHANGES:  # a message of the session (allowed_send names a real one)
        change = {
            "sessionId": world.s1,
            "messageId": str(uuid.uuid4()),
            "clientMessageId": client_message_id,
        }
        if destination == "/app/chat.edit":
            change["content"] = f"let me in {client_message_id}"
        return change
    return {
        "sessionId": world.s1,
        "content": f"let me in {client_message_id}",
        "clientMessageId": client_message_id,
    }


async def watch_topic(world: World, peers: Opener) -> Peer:
    """Bob, subscribed to the session under test."""
    bob = await peers("bob")
    await bob.subscribe(concrete(world, TOPIC))
    return bob


async def only_the_sentinel_follows(world: World, watcher: Peer, refused_cid: str) -> None:
    """Nothing of a refused SEND was stored or delivered: Bob (``watcher``, on the topic) sends
    a message over ``/app/chat.send``; its RECEIPT means message-svc got to it, after anything
    the refused SEND might have queued; the topic's next MESSAGE must be Bob's own (not a
    message, typing or receipt of the refused SEND), and history holds no refused message."""
    topic = concrete(world, TOPIC)
    sentinel = cid()
    body = {"sessionId": world.s1, "content": f"sentinel {sentinel}", "clientMessageId": sentinel}
    await watcher.send("/app/chat.send", body, "sentinel")
    got: dict[str, Frame] = {}
    for _ in range(2):  # the RECEIPT and the topic's MESSAGE, in either order
        frame = await watcher.next()
        assert frame.command != "ERROR", f"the sentinel SEND was refused: {frame.headers}"
        got[frame.command] = frame
    assert got.keys() == {"RECEIPT", "MESSAGE"}, {c: f.headers for c, f in got.items()}
    message = got["MESSAGE"]
    assert message.header("destination") == topic
    assert message.header("x-event") == "message", body_of(message)
    assert body_of(message)["clientMessageId"] == sentinel
    stored = await history_ids(world, "alice", world.s1)
    assert sentinel in stored
    assert refused_cid not in stored


# -- the matrix ----------------------------------------------------------------------------------


def test_every_destination_has_a_row_in_the_matrix() -> None:
    served = {("SUBSCRIBE", d) for d in destinations.SUBSCRIBE}
    served |= {("SEND", d) for d in destinations.SEND}
    assert served == set(MATRIX), (
        f"destinations without a row: {sorted(served - set(MATRIX))}; "
        f"rows for destinations ws-edge does not serve: {sorted(set(MATRIX) - served)}"
    )
    assert all(set(row) == set(CALLERS) for row in MATRIX.values())


@pytest.mark.parametrize(
    ("frame", "destination", "caller"), CASES, ids=[f"{f} {d} as {c}" for f, d, c in CASES]
)
async def test_matrix(
    world: World, peers: Opener, frame: str, destination: str, caller: str
) -> None:
    outcome = MATRIX[frame, destination][caller]
    async with asyncio.timeout(CASE_TIMEOUT):
        if outcome == "unauthenticated":
            await unauthenticated(world, peers, caller, frame, destination)
        elif frame == "SUBSCRIBE" and destination == TOPIC:
            await topic_subscription(world, peers, ROLES[caller], outcome)
        elif frame == "SUBSCRIBE":
            assert outcome == "own_only"
            await own_queue_only(world, peers, ROLES[caller], destination)
        elif outcome == "allowed":
            await allowed_send(world, peers, ROLES[caller], destination)
        else:
            assert outcome == "not_participant"
            await refused_send(world, peers, ROLES[caller], destination)


async def unauthenticated(
    world: World, peers: Opener, caller: str, frame: str, destination: str
) -> None:
    """ERROR instead of CONNECTED, then close; the frame sent right behind the CONNECT (same
    WebSocket message, so the edge holds it until it has checked the token) is dropped."""
    token = await asyncio.to_thread(anonymous_token, world, caller)
    watcher = await watch_topic(world, peers) if frame == "SEND" else None
    target = concrete(world, destination)
    refused_cid = cid()
    if frame == "SEND":
        behind = send_frame(target, body_for(world, target, refused_cid), "r-1")
    else:
        behind = subscribe_frame("s-1", target, "r-1")
    peer = await Peer.raw(world)
    try:
        await peer.write(connect_frame(token), behind)
        frames, code = await peer.until_closed()
    finally:
        await peer.close()
    assert [f.command for f in frames] == ["ERROR"], [(f.command, f.headers) for f in frames]
    assert frames[0].header("message"), frames[0].headers
    assert code == 1008, code
    if watcher is not None:
        await only_the_sentinel_follows(world, watcher, refused_cid)


async def topic_subscription(world: World, peers: Opener, role: Role, outcome: Outcome) -> None:
    topic = concrete(world, TOPIC)
    me = await peers(role.me)
    if outcome == "allowed":
        await me.subscribe(topic)
        sent = await rest_send(world, "bob", world.s1)
        message = await me.message_on(topic)
        assert message.header("x-session-id") == world.s1
        assert body_of(message)["messageId"] == sent["messageId"]
        return
    assert outcome == "refused"
    await me.write(subscribe_frame(me.next_id(), topic, "r-1"))
    sent = await rest_send(world, "bob", world.s1)  # published while the refusal is decided
    frames, code = await me.until_closed()
    assert [f.command for f in frames] == ["ERROR"], [(f.command, f.headers) for f in frames]
    assert frames[0].header("message") == "not a participant of this session"
    assert code == 1008, code
    assert sent["clientMessageId"] in await history_ids(world, "bob", world.s1)


async def own_queue_only(world: World, peers: Opener, role: Role, queue: str) -> None:
    """The caller and a foreign user both subscribe to ``queue``; an event for the foreign user
    reaches them (and not the caller), then the caller's own event is the caller's first."""
    me, foreign = await peers(role.me), await peers(role.foreign)
    await me.subscribe(queue)
    await foreign.subscribe(queue)
    if queue == "/user/queue/messages":  # a message in each one's own session
        theirs = await rest_send(world, role.foreign_peer, world.sessions[role.foreign_session])
        got = await foreign.message_on(queue)
        assert body_of(got)["messageId"] == theirs["messageId"]
        mine = await rest_send(world, role.peer, world.sessions[role.session])
        got = await me.message_on(queue)
        assert body_of(got)["messageId"] == mine["messageId"]
        assert got.header("x-session-id") == world.sessions[role.session]
        return
    if queue == "/user/queue/presence":  # the foreign user's peer connects
        await peers(role.foreign_peer)
        with contextlib.suppress(TimeoutError):  # the caller hears of their own peer only
            while True:
                told = body_of(await me.message_on(queue, QUIET))
                assert told["email"] == world.emails[role.peer], told
        return
    if queue == "/user/queue/keys":  # the foreign user's peer, then the caller's, adds a key
        await publish_key(world, role.foreign_peer)
        told = body_of(await foreign.message_on(queue))
        assert told["email"] == world.emails[role.foreign_peer], told
        await publish_key(world, role.peer)
        told = body_of(await me.message_on(queue))
        assert (told["email"], told["change"]) == (world.emails[role.peer], "added"), told
        await me.quiet()
        return
    # ack: each sends a message over WebSocket in their own session; error: each sends one to a
    # session they are not in (message-svc's refusal comes back through the broker)
    own_session = queue == "/user/queue/ack"
    for peer, name, session in (
        (foreign, role.foreign, world.sessions[role.foreign_session]),
        (me, role.me, world.sessions[role.session]),
    ):
        message_id = cid()
        body = {
            "sessionId": session if own_session else world.outside(name),
            "content": f"x {message_id}",
            "clientMessageId": message_id,
        }
        await peer.send("/app/chat.send", body, None)
        event = body_of(await peer.message_on(queue))
        assert event["clientMessageId"] == message_id, event
        if not own_session:
            assert event["code"] == "NOT_PARTICIPANT", event
    await me.quiet()


async def allowed_send(world: World, peers: Opener, role: Role, destination: str) -> None:
    bob = await watch_topic(world, peers)
    me = await peers(role.me)
    topic = concrete(world, TOPIC)
    body = body_for(world, destination, cid())
    if destination == "/app/chat.read":
        sent = await rest_send(world, "bob", world.s1)
        assert body_of(await bob.message_on(topic))["messageId"] == sent["messageId"]
        body["upToSeq"] = sent["seq"]
    if destination in CHANGES:
        sent = await rest_send(world, role.me, world.s1)
        assert body_of(await bob.message_on(topic))["messageId"] == sent["messageId"]
        body["messageId"] = sent["messageId"]
    await me.send(destination, body, "r-ok")
    receipt = await me.next()
    assert receipt.command == "RECEIPT", (receipt.command, receipt.headers, receipt.body)
    assert receipt.header("receipt-id") == "r-ok"
    seen = await bob.message_on(topic)
    event = body_of(seen)
    if destination == "/app/chat.send":
        assert seen.header("x-event") == "message"
        assert (event["clientMessageId"], event["senderEmail"]) == (
            body["clientMessageId"],
            world.emails[role.me],
        )
        assert body["clientMessageId"] in await history_ids(world, "bob", world.s1)
    elif destination in CHANGES:
        assert seen.header("x-event") == destination.removeprefix("/app/chat.")
        assert (event["messageId"], event["clientMessageId"], event["senderEmail"]) == (
            body["messageId"],
            body["clientMessageId"],
            world.emails[role.me],
        )
    elif destination == "/app/chat.typing":
        assert seen.header("x-event") == "typing"
        assert (event["email"], event["sessionId"]) == (world.emails[role.me], world.s1)
    else:
        assert seen.header("x-event") == "receipt"
        assert (event["kind"], event["email"], event["upToSeq"]) == (
            "read",
            world.emails[role.me],
            body["upToSeq"],
        )


async def refused_send(world: World, peers: Opener, role: Role, destination: str) -> None:
    """A MESSAGE on the caller's error queue, no RECEIPT, nothing stored or delivered; the
    connection stays open."""
    bob = await watch_topic(world, peers)
    me = await peers(role.me)
    await me.subscribe("/user/queue/error")
    refused_cid = cid()
    await me.send(destination, body_for(world, destination, refused_cid), "r-no")
    error = await me.message_on("/user/queue/error")
    assert error.header("receipt-id") == "r-no"
    detail = body_of(error)
    assert detail["code"] == "NOT_PARTICIPANT", detail
    if destination in ("/app/chat.send", *CHANGES):
        assert detail["clientMessageId"] == refused_cid
    await only_the_sentinel_follows(world, bob, refused_cid)
    await me.quiet()  # no RECEIPT, and still connected


# -- crafted destinations ------------------------------------------------------------------------


# Destinations that try to reach another user's events, the broker, or a wildcard; {alice}
# is Alice's email, {alice_key} her routing key, {s1} the session under test.
CRAFTED_SUBSCRIPTIONS = [
    "/user/{alice}/queue/messages",
    "/user/{alice_escaped}/queue/messages",
    "/user/queue/messages/{alice}",
    "/user/queue/messages/",
    "/user//queue/messages",
    "/user/queue/../queue/messages",
    "/user/queue/messages/../../{alice}/queue/messages",
    "/user/queue/messages?user={alice}",
    "/USER/QUEUE/MESSAGES",
    "/user/queue/*",
    "/user/queue/#",
    "/user/queue/receipts",
    "/user/queue/typing",
    "/queue/messages",
    "/queue/{alice}",
    "/queue/chat.send",
    "/exchange/chat.events/#",
    "/exchange/chat.events/{alice_key}",
    "/exchange/chat.events/session.{s1}",
    "/amq/queue/chat.send",
    "/amq/queue/chat.send.dead",
    "/temp-queue/messages",
    "/topic/#",
    "/topic/*",
    "/topic/session.*",
    "/topic/session.#",
    "/topic/{alice_key}",
    "/topic/session.{s1_upper}",
    "/topic/session.{s1_hex}",
    "/topic/session.{{{s1}}}",
    "/topic/session.urn:uuid:{s1}",
    "/topic/session.{s1}/../session.{s1}",
    "/topic/session.{s1}.#",
    "/topic/session.{s1} ",
    " /topic/session.{s1}",
    "/app/chat.send",
    "",
]


def concrete(world: World, template: str) -> str:
    alice, s1 = world.emails["alice"], world.s1
    return template.format_map(
        {
            "alice": alice,
            "alice_escaped": alice.replace("@", "%40"),
            "alice_key": routing.user_key(alice),
            "bob": world.emails["bob"],
            "s1": s1,
            "s1_upper": s1.upper(),
            "s1_hex": s1.replace("-", ""),
            "sessionId": s1,
        }
    )


@pytest.mark.parametrize("template", CRAFTED_SUBSCRIPTIONS, ids=repr)
async def test_a_crafted_subscription_is_an_error(
    world: World, peers: Opener, template: str
) -> None:
    """Eve subscribes to a crafted destination while a message for Alice is published: ERROR,
    close, and nothing of Alice's reaches Eve (Alice, on her own queue, gets it)."""
    destination = concrete(world, template)
    async with asyncio.timeout(CASE_TIMEOUT):
        alice = await peers("alice")
        await alice.subscribe("/user/queue/messages")
        eve = await peers("eve")
        await eve.write(subscribe_frame(eve.next_id(), destination, "r-1"))
        sent = await rest_send(world, "bob", world.s1)
        frames, code = await eve.until_closed()
        assert [f.command for f in frames] == ["ERROR"], [(f.command, f.headers) for f in frames]
        assert code in (1002, 1008), code  # refused, or (no destination) a protocol error
        got = await alice.message_on("/user/queue/messages")
        assert body_of(got)["messageId"] == sent["messageId"]


CRAFTED_SENDS = [
    "/app/chat.send/",
    "/app/../app/chat.send",
    "/app//chat.send",
    "/APP/CHAT.SEND",
    "/app/chat.*",
    "/app/chat.send ",
    "/app/chat.message",
    "/app/chat.delivered",
    "/chat.send",
    "/queue/chat.send",
    "/amq/queue/chat.send",
    "/exchange/chat.events/session.{sessionId}",
    "/topic/session.{sessionId}",
    "/user/queue/messages",
    "/user/{bob}/queue/messages",
]


@pytest.mark.parametrize("destination", CRAFTED_SENDS, ids=repr)
async def test_a_send_to_a_destination_ws_edge_does_not_serve_is_an_error(
    world: World, peers: Opener, destination: str
) -> None:
    """Alice (a participant, so only the destination is wrong) sends a message: ERROR, close,
    nothing stored or delivered."""
    async with asyncio.timeout(CASE_TIMEOUT):
        bob = await watch_topic(world, peers)
        alice = await peers("alice")
        refused_cid = cid()
        body = body_for(world, "/app/chat.send", refused_cid)
        await alice.send(concrete(world, destination), body, "r-1")
        frames, code = await alice.until_closed()
        assert [f.command for f in frames] == ["ERROR"], [(f.command, f.headers) for f in frames]
        message = frames[0].header("message") or ""
        assert message.startswith("unknown destination"), message
        assert code == 1008, code
        await only_the_sentinel_follows(world, bob, refused_cid)
