"""A steady chat load through the gateway, and a Jepsen-style check of what it saw, for the
fault-injection suite (``tests/chaos``).

``Load`` opens N sessions of two users. Both users of a session hold a live STOMP subscription
to ``/topic/session.{id}`` (reconnecting with backoff, resuming with ``x-resume-after-seq`` =
the last seq seen); the two take turns sending over REST at a fixed total rate, each message
with its own ``clientMessageId``, retried with the *same* one on a 5xx, a 429, a timeout or a
refused connection (the send is idempotent). ``Load.finish`` stops sending, lets the retries
settle, waits for the deliveries and checks, as Jepsen's queue checker does:

- lost: acknowledged (2xx) to its sender, never delivered to one of the participants (counted
  per participant), or missing from the session's history;
- duplicated: the same ``messageId`` more than once on one subscription's wire (allowed:
  delivery is at-least-once; a client de-duplicates by ``messageId``);
- out of order: after de-duplication, a subscription that saw a seq below one it had seen;
- unexpected: delivered or in history, never sent by the load, or sent and refused (4xx);
- recovered: never answered (indeterminate), yet stored.

All times are ``time.monotonic()``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from chat_testing.stomp import StompClient

RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class User:
    email: str
    token: str


@dataclass(frozen=True)
class Chat:
    index: int
    id: str
    users: tuple[User, User]


@dataclass
class Send:
    """One message the load sent, through every attempt."""

    chat: int
    sender: int
    client_id: str
    content: str
    created: float  # when the user pressed send (it may wait for a free slot before trying)
    attempts: int = 0
    status: str = "pending"  # pending -> acked | refused; pending at the end: indeterminate
    answer: int | None = None  # the HTTP status that settled it
    message_id: str | None = None
    seq: int | None = None
    acked_at: float | None = None
    replayed: int = 0  # answers with Idempotent-Replayed: true
    other_ids: set[str] = field(default_factory=set)  # other messageIds a retry answered
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Delivery:
    message_id: str
    seq: int
    client_id: str
    at: float
    connection: int


class Subscriber:
    """One participant's live subscription to its session's topic, kept alive across faults."""

    def __init__(self, ws_url: str, chat: Chat, user: int) -> None:
        self.ws_url = ws_url
        self.chat = chat
        self.user = user
        self.wire: list[Delivery] = []
        self.last_seq = 0
        self.connections = 0
        self.failed_connects = 0
        self.drops: list[tuple[float, str]] = []
        self.live = asyncio.Event()  # the first subscription is bound (its RECEIPT came)
        self.first_seen: dict[str, float] = {}

    @property
    def destination(self) -> str:
        return f"/topic/session.{self.chat.id}"

    async def run(self) -> None:
        """Connect, subscribe, read; on any drop reconnect with backoff. Ends when cancelled."""
        backoff = 0.05
        token = self.chat.users[self.user].token
        while True:
            try:
                async with asyncio.timeout(5):
                    client = await StompClient.open(f"{self.ws_url}?access_token={token}")
            except Exception:  # refused, unreachable, timed out: try again
                self.failed_connects += 1
                await asyncio.sleep(backoff * (1 + random.random()))
                backoff = min(backoff * 2, 1.0)
                continue
            self.connections += 1
            connection = self.connections
            reason = "closed"
            try:
                await client.subscribe(
                    self.destination,
                    ("x-resume-after-seq", str(self.last_seq)),
                    ("receipt", f"live-{connection}"),
                )
                async for frame in client.frames():
                    if frame.command == "RECEIPT":
                        self.live.set()
                        backoff = 0.05
                    elif frame.command == "ERROR":
                        reason = f"ERROR {frame.header('message')}"
                        break
                    elif frame.command == "MESSAGE" and frame.header("x-event") == "message":
                        self._record(json.loads(frame.body), connection)
            except Exception as exc:  # any drop: reconnect (the checker judges the outcome)
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1):
                        await client.close()
            self.drops.append((time.monotonic(), reason))
            await asyncio.sleep(backoff * (1 + random.random()))
            backoff = min(backoff * 2, 1.0)

    def _record(self, message: dict[str, Any], connection: int) -> None:
        now = time.monotonic()
        delivery = Delivery(
            str(message["messageId"]),
            int(message["seq"]),
            str(message["clientMessageId"]),
            now,
            connection,
        )
        self.wire.append(delivery)
        self.first_seen.setdefault(delivery.message_id, now)
        self.last_seq = max(self.last_seq, delivery.seq)


class StompOutcome(Exception):
    """A SEND over STOMP that got no stored answer: ``code`` from ``/user/queue/error``, or
    ``DROPPED`` when the connection went before an answer."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class StompSender:
    """One user's STOMP connection for ``SEND /app/chat.send``, kept alive across faults.
    :meth:`send` answers the stored message (from ``/user/queue/ack``, then the RECEIPT) or
    raises :class:`StompOutcome`."""

    def __init__(self, ws_url: str, user: User) -> None:
        self.ws_url = ws_url
        self.user = user
        self.live = asyncio.Event()
        self._client: StompClient | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._acks: dict[str, dict[str, Any]] = {}  # clientMessageId -> stored message
        self._receipts = itertools.count()
        self.drops = 0
        self.last_drop = ""

    async def run(self) -> None:
        backoff = 0.05
        url = f"{self.ws_url}?access_token={self.user.token}"
        while True:
            client: StompClient | None = None
            try:
                async with asyncio.timeout(5):
                    client = await StompClient.open(url)
                await client.subscribe("/user/queue/ack")
                await client.subscribe("/user/queue/error", ("receipt", "live"))
                async for frame in client.frames():
                    self._on(client, frame)
            except Exception as exc:  # any drop: reconnect; the checker judges the outcome
                self.last_drop = f"{type(exc).__name__}: {exc}"
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(1):
                            await client.close()
            self.live.clear()
            self._client = None
            self.drops += 1
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(StompOutcome("DROPPED"))
            self._waiting.clear()
            await asyncio.sleep(backoff * (1 + random.random()))
            backoff = min(backoff * 2, 1.0)

    def _on(self, client: StompClient, frame: Any) -> None:
        if frame.command == "RECEIPT":
            receipt = frame.header("receipt-id") or ""
            if receipt == "live":
                self._client = client
                self.live.set()
                return
            future = self._waiting.pop(receipt, None)
            stored = self._acks.pop(receipt.rpartition(":")[0], None)
            if future is not None and not future.done():
                if stored is None:
                    future.set_exception(StompOutcome("RECEIPT_WITHOUT_ACK"))
                else:
                    future.set_result(stored)
        elif frame.command == "MESSAGE" and frame.header("x-event") == "ack":
            stored = json.loads(frame.body)
            self._acks[str(stored["clientMessageId"])] = stored
        elif frame.command == "MESSAGE" and frame.header("x-event") == "error":
            future = self._waiting.pop(frame.header("receipt-id") or "", None)
            if future is not None and not future.done():
                future.set_exception(StompOutcome(str(json.loads(frame.body).get("code"))))
        elif frame.command == "ERROR":
            raise ConnectionError(frame.header("message"))

    async def send(self, body: dict[str, Any], within: float) -> dict[str, Any]:
        async with asyncio.timeout(within):
            await self.live.wait()
            client = self._client
            if client is None:
                raise StompOutcome("DROPPED")
            receipt = f"{body['clientMessageId']}:{next(self._receipts)}"
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._waiting[receipt] = future
            try:
                await client.send("/app/chat.send", json.dumps(body).encode(), ("receipt", receipt))
                return await future
            finally:
                self._waiting.pop(receipt, None)


@dataclass
class Report:
    """What one load run saw; ``problems()`` lists every broken guarantee."""

    name: str
    sessions: int
    rate: float
    load_seconds: float = 0.0
    sent: int = 0
    never_tried: int = 0
    attempts: int = 0
    retried: int = 0
    acknowledged: int = 0
    replayed_answers: int = 0
    refused: int = 0
    indeterminate: int = 0
    recovered: int = 0
    expected_deliveries: int = 0
    delivered: int = 0
    wire_frames: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    lost: int = 0
    missing_from_history: int = 0
    stored_not_delivered: int = 0
    unexpected: int = 0
    refused_but_present: int = 0
    id_mismatch: int = 0
    history_messages: int = 0
    history_gaps: int = 0
    reconnects: int = 0
    failed_connects: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    fault_at_s: float | None = None
    healed_at_s: float | None = None
    recovered_after_s: float | None = None
    max_latency_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)  # what the fault itself observed
    examples: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        broken = {
            "lost": self.lost,
            "missing_from_history": self.missing_from_history,
            "stored_not_delivered": self.stored_not_delivered,
            "out_of_order": self.out_of_order,
            "unexpected": self.unexpected,
            "refused_but_present": self.refused_but_present,
            "id_mismatch": self.id_mismatch,
            "history_gaps": self.history_gaps,
        }
        return [f"{name} = {count}" for name, count in broken.items() if count]

    def figures(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "examples"} | {
            "examples": self.examples[:10]
        }

    def line(self) -> str:
        recovered = "n/a" if self.recovered_after_s is None else f"{self.recovered_after_s:.2f}s"
        return (
            f"{self.name:<22} sent {self.sent:>4}  acked {self.acknowledged:>4}"
            f"  refused {self.refused}  indeterminate {self.indeterminate}"
            f"  retried {self.retried:>3}  delivered {self.delivered:>4}/{self.expected_deliveries}"
            f"  dup-on-wire {self.duplicates}  lost {self.lost}"
            f"  out-of-order {self.out_of_order}  reconnects {self.reconnects}"
            f"  recovered-in {recovered}  max-latency {self.max_latency_s:.2f}s"
        )


class Load:
    def __init__(
        self,
        gateway: str,
        flairbit: str,
        *,
        sessions: int = 10,
        rate: float = 50.0,
        name: str = "load",
        request_timeout: float = 5.0,
        max_in_flight: int = 32,
        send_path: str = "rest",
    ) -> None:
        self.gateway = gateway
        self.flairbit = flairbit
        self.ws_url = gateway.replace("http://", "ws://", 1) + "/ws"
        self.session_count = sessions
        self.send_path = send_path  # "rest", or "stomp": SEND /app/chat.send with a receipt
        self.senders: dict[str, StompSender] = {}
        self.rate = rate
        self.name = name
        self.tag = uuid.uuid4().hex[:8]
        self.chats: list[Chat] = []
        self.subscribers: list[Subscriber] = []
        self.sends: list[Send] = []
        self._request_timeout = request_timeout
        # Sends wait their turn beyond this many in flight (as a client's outbox would): an
        # outage queues them instead of opening ever more connections to retry.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._client: httpx.AsyncClient | None = None  # made by open()
        self._listeners: list[asyncio.Task[None]] = []
        self._senders: set[asyncio.Task[None]] = set()
        self._pacer: asyncio.Task[None] | None = None
        self._stop_sending = asyncio.Event()
        self._give_up_at = float("inf")
        self.started_at = 0.0
        self.stopped_at = 0.0

    # ---- setup ------------------------------------------------------------------------------

    @property
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.gateway,
                timeout=self._request_timeout,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            )
        return self._client

    async def _token(self, email: str) -> str:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(f"{self.flairbit}/dev/token", json={"email": email})
            answer.raise_for_status()
            return str(answer.json()["token"])

    async def _open_chat(self, index: int) -> Chat:
        a = f"chaos.{self.tag}.{index}.a@example.com"
        b = f"chaos.{self.tag}.{index}.b@example.com"
        ta, tb = await asyncio.gather(self._token(a), self._token(b))
        for attempt in range(5):  # a busy machine may time a first look-up out
            opened = await self._http.post(
                "/api/chat/init",
                json={"toEmail": b, "intent": "dating"},
                headers={"Authorization": f"Bearer {ta}"},
                timeout=20,
            )
            if opened.status_code not in RETRYABLE or attempt == 4:
                break
            await asyncio.sleep(0.5)
        opened.raise_for_status()
        return Chat(index, str(opened.json()["sessionId"]), (User(a, ta), User(b, tb)))

    async def open(self, within: float = 30.0) -> None:
        """Open the sessions and the subscriptions; return once every subscription is bound."""
        self.chats = list(
            await asyncio.gather(*(self._open_chat(i) for i in range(self.session_count)))
        )
        self.subscribers = [Subscriber(self.ws_url, c, u) for c in self.chats for u in (0, 1)]
        self._listeners = [asyncio.create_task(s.run()) for s in self.subscribers]
        if self.send_path == "stomp":
            users = [u for c in self.chats for u in c.users]
            self.senders = {u.email: StompSender(self.ws_url, u) for u in users}
            self._listeners += [asyncio.create_task(s.run()) for s in self.senders.values()]
        async with asyncio.timeout(within):
            await asyncio.gather(*(s.live.wait() for s in self.subscribers))
            await asyncio.gather(*(s.live.wait() for s in self.senders.values()))

    # ---- sending ----------------------------------------------------------------------------

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._pacer = asyncio.create_task(self._pace())

    async def _pace(self) -> None:
        for n in itertools.count():
            due = self.started_at + n / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._stop_sending.is_set():
                return
            chat = n % self.session_count
            sender = (n // self.session_count) % 2
            send = Send(
                chat,
                sender,
                str(uuid.uuid4()),
                f"chaos {self.tag} #{n} s{chat} from {'ab'[sender]}",
                time.monotonic(),
            )
            self.sends.append(send)
            task = asyncio.create_task(self._deliver(send))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)

    async def _deliver(self, send: Send) -> None:
        async with self._in_flight:
            await self._attempts(send)

    async def _attempts(self, send: Send) -> None:
        if self.send_path == "stomp":
            await self._stomp_attempts(send)
            return
        chat = self.chats[send.chat]
        headers = {"Authorization": f"Bearer {chat.users[send.sender].token}"}
        body = {"sessionId": chat.id, "content": send.content, "clientMessageId": send.client_id}
        backoff = 0.05
        while time.monotonic() < self._give_up_at:
            send.attempts += 1
            wait = backoff * (1 + random.random())
            try:
                answer = await self._http.post("/api/chat/message", json=body, headers=headers)
            except httpx.TransportError as exc:  # timeouts, refused or reset connections
                send.errors[type(exc).__name__] += 1
            else:
                if 200 <= answer.status_code < 300:
                    stored = answer.json()
                    message_id = str(stored["messageId"])
                    if answer.headers.get("idempotent-replayed") == "true":
                        send.replayed += 1
                    if send.message_id is None:
                        send.message_id, send.seq = message_id, int(stored["seq"])
                        send.acked_at = time.monotonic()
                    elif message_id != send.message_id:
                        send.other_ids.add(message_id)
                    send.status, send.answer = "acked", answer.status_code
                    return
                if answer.status_code not in RETRYABLE:
                    send.status, send.answer = "refused", answer.status_code
                    send.errors[f"{answer.status_code} {_code(answer)}"] += 1
                    return
                send.errors[f"{answer.status_code} {_code(answer)}"] += 1
                if answer.status_code == 429:
                    with contextlib.suppress(ValueError):
                        wait = max(wait, float(answer.headers.get("retry-after", "0")))
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, 1.0)

    async def _stomp_attempts(self, send: Send) -> None:
        """SEND with a receipt; retried with the same ``clientMessageId`` on no answer, a
        dropped connection or ``UNAVAILABLE``/``RATE_LIMITED``; refused on any other error."""
        chat = self.chats[send.chat]
        sender = self.senders[chat.users[send.sender].email]
        body = {"sessionId": chat.id, "content": send.content, "clientMessageId": send.client_id}
        backoff = 0.05
        while time.monotonic() < self._give_up_at:
            send.attempts += 1
            try:
                stored = await sender.send(body, self._request_timeout)
            except TimeoutError:
                send.errors["no answer"] += 1
            except StompOutcome as outcome:
                send.errors[outcome.code] += 1
                if outcome.code not in ("DROPPED", "UNAVAILABLE", "RATE_LIMITED"):
                    send.status, send.answer = "refused", 400
                    return
            else:
                message_id = str(stored["messageId"])
                if send.message_id is None:
                    send.message_id, send.seq = message_id, int(stored["seq"])
                    send.acked_at = time.monotonic()
                elif message_id != send.message_id:
                    send.other_ids.add(message_id)
                send.status, send.answer = "acked", 200
                return
            await asyncio.sleep(backoff * (1 + random.random()))
            backoff = min(backoff * 2, 1.0)

    # ---- the end ----------------------------------------------------------------------------

    async def finish(
        self,
        *,
        fault_at: float | None = None,
        healed_at: float | None = None,
        settle_seconds: float = 20.0,
        drain_seconds: float = 20.0,
    ) -> Report:
        """Stop sending; give the retries ``settle_seconds`` to get an answer and the
        subscriptions ``drain_seconds`` to deliver what was stored; then check."""
        self._stop_sending.set()
        if self._pacer is not None:
            await self._pacer
        self.stopped_at = time.monotonic()
        self._give_up_at = self.stopped_at + settle_seconds
        if self._senders:
            await asyncio.wait(set(self._senders), timeout=settle_seconds + self._request_timeout)
        for task in list(self._senders):
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        history = await self._histories()
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline and not self._all_delivered(history):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        # what was stored while the deliveries drained (a late retry) is checked too
        history = await self._histories()
        for task in self._listeners:
            task.cancel()
        await asyncio.gather(*self._listeners, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        return check(self, history, fault_at, healed_at)

    def _all_delivered(self, history: dict[int, list[dict[str, Any]]]) -> bool:
        for subscriber in self.subscribers:
            wanted = {m["messageId"] for m in history[subscriber.chat.index]}
            if not wanted <= subscriber.first_seen.keys():
                return False
        return True

    async def _histories(self) -> dict[int, list[dict[str, Any]]]:
        pages = await asyncio.gather(*(self._history(chat) for chat in self.chats))
        return {chat.index: page for chat, page in zip(self.chats, pages, strict=True)}

    async def _history(self, chat: Chat) -> list[dict[str, Any]]:
        """Every message of the session, oldest first, by pages of 200 (``after`` cursor)."""
        headers = {"Authorization": f"Bearer {chat.users[0].token}"}
        found: list[dict[str, Any]] = []
        after = 0
        async with httpx.AsyncClient(base_url=self.gateway, timeout=20) as client:
            while True:
                answer = None
                for _ in range(50):  # the stack may still be recovering
                    with contextlib.suppress(httpx.TransportError):
                        answer = await client.get(
                            f"/api/chat/{chat.id}/history",
                            params={"limit": 200, "after": after},
                            headers=headers,
                        )
                        if 200 <= answer.status_code < 300:
                            break
                    await asyncio.sleep(0.2)
                if answer is None or answer.status_code != 200:
                    raise AssertionError(f"history of {chat.id}: {answer and answer.text}")
                page = sorted(answer.json()["messages"], key=lambda m: int(m["seq"]))
                found += page
                if len(page) < 200:
                    return found
                after = int(page[-1]["seq"])


def check(
    load: Load,
    history: dict[int, list[dict[str, Any]]],
    fault_at: float | None = None,
    healed_at: float | None = None,
) -> Report:
    """Judge a finished run: what was sent and answered (``load.sends``), what each
    subscription saw (``load.subscribers``) and each session's history (oldest first)."""
    report = Report(load.name, load.session_count, load.rate)
    report.load_seconds = round(load.stopped_at - load.started_at, 2)
    examples = report.examples
    by_client_id = {s.client_id: s for s in load.sends}
    errors: Counter[str] = Counter()
    for send in load.sends:
        if send.attempts == 0:  # still queued when the load gave up: never left the client
            report.never_tried += 1
            continue
        report.sent += 1
        report.attempts += send.attempts
        report.retried += send.attempts > 1
        report.replayed_answers += send.replayed
        errors.update(send.errors)
        if send.status == "acked":
            report.acknowledged += 1
        elif send.status == "refused":
            report.refused += 1
        else:
            report.indeterminate += 1
        if send.other_ids:
            report.id_mismatch += 1
            examples.append(f"{send.client_id} answered with {send.other_ids}")
    report.errors = dict(errors.most_common())

    # history: gapless, every acknowledged message there, nothing refused or foreign
    stored: dict[str, dict[str, Any]] = {}
    for chat in load.chats:
        messages = history[chat.index]
        seqs = [int(m["seq"]) for m in messages]
        if seqs != list(range(1, len(seqs) + 1)):
            report.history_gaps += 1
            examples.append(f"history of session {chat.index} has seqs {seqs[:20]}...")
        report.history_messages += len(messages)
        for message in messages:
            stored[str(message["messageId"])] = message
            origin = by_client_id.get(str(message["clientMessageId"]))
            if origin is None or origin.chat != chat.index:
                report.unexpected += 1
                examples.append(f"history holds a message never sent: {message}")
            elif origin.status == "refused":
                report.refused_but_present += 1
                examples.append(f"refused ({origin.answer}) but stored: {origin.client_id}")
            elif origin.status == "pending":
                report.recovered += 1
            elif message["messageId"] != origin.message_id:
                report.id_mismatch += 1
                examples.append(f"{origin.client_id}: acked {origin.message_id}, stored {message}")
    for send in load.sends:
        if send.status == "acked" and send.message_id not in stored:
            report.missing_from_history += 1
            examples.append(f"acked but not in history: {send.client_id} {send.message_id}")

    # each subscription: exactly the session's messages, in seq order, after de-duplication
    for subscriber in load.subscribers:
        report.reconnects += max(0, subscriber.connections - 1)
        report.failed_connects += subscriber.failed_connects
        report.wire_frames += len(subscriber.wire)
        seen: set[str] = set()
        highest = 0
        for delivery in subscriber.wire:
            if delivery.message_id in seen:
                report.duplicates += 1
                continue
            seen.add(delivery.message_id)
            if delivery.seq < highest:
                report.out_of_order += 1
                examples.append(
                    f"session {subscriber.chat.index} user {subscriber.user}: seq"
                    f" {delivery.seq} after {highest}"
                )
            highest = max(highest, delivery.seq)
            if delivery.message_id not in stored:
                report.unexpected += 1
                examples.append(f"delivered, not in history: {delivery}")
        report.delivered += len(seen)
        mine = [s for s in load.sends if s.chat == subscriber.chat.index]
        for send in mine:
            if send.status == "acked":
                report.expected_deliveries += 1
                if send.message_id not in seen:
                    report.lost += 1
                    examples.append(
                        f"lost: session {send.chat} user {subscriber.user} never got seq"
                        f" {send.seq} ({send.message_id}, acked at"
                        f" {_rel(send.acked_at, load.started_at)})"
                    )
        for message in history[subscriber.chat.index]:
            origin = by_client_id.get(str(message["clientMessageId"]))
            acked = origin is not None and origin.status == "acked"
            if not acked and message["messageId"] not in seen:  # acked ones count as lost
                report.stored_not_delivered += 1
                examples.append(
                    f"stored, never delivered: session {subscriber.chat.index} user"
                    f" {subscriber.user} seq {message['seq']}"
                )

    # recovery: from the fault until a message first sent after it reached both participants
    if fault_at is not None:
        report.fault_at_s = round(fault_at - load.started_at, 2)
        if healed_at is not None:
            report.healed_at_s = round(healed_at - load.started_at, 2)
        firsts = [
            at
            for send in load.sends
            if send.created >= fault_at and (at := _delivered_to_all(load, send)) is not None
        ]
        if firsts:
            report.recovered_after_s = round(min(firsts) - fault_at, 2)
    latencies = [
        at - send.created
        for send in load.sends
        if (at := _delivered_to_all(load, send)) is not None
    ]
    report.max_latency_s = round(max(latencies, default=0.0), 2)
    return report


def _delivered_to_all(load: Load, send: Send) -> float | None:
    if send.message_id is None:
        return None
    times = [
        s.first_seen.get(send.message_id) for s in load.subscribers if s.chat.index == send.chat
    ]
    return None if any(t is None for t in times) else max(t for t in times if t is not None)


def _code(answer: httpx.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(answer.json().get("code", ""))
    return ""


def _rel(at: float | None, start: float) -> str:
    return "?" if at is None else f"+{at - start:.2f}s"
