"""The benchmark workload: K sessions of two users, each user on a live STOMP connection;
messages sent at a fixed offered rate, each one checked delivered to both participants exactly
once and in order; latency from send to each delivery.

The outcome follows Jepsen's queue checker: lost (acknowledged, never delivered), duplicated,
unexpected (delivered, never sent), out of order."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from chat_testing.stomp import StompClient
from ws_edge.stomp.frames import Frame

# send(session index, message number, body) -> awaits the sender's acknowledgement
Sender = Callable[[int, int, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivered message of the run: its session index and number (the sender's), when it
    was sent (perf_counter), and its place in the session's order as the system under test
    assigned it (the stack's ``seq``; for a broker that only relays, the sender's number)."""

    session: int
    number: int
    sent_at: float
    order: int


# extract(frame) -> the run's message in that frame, or None (another run's, or no message)
Extractor = Callable[[Frame], Delivery | None]


@dataclass
class Outcome:
    offered_rate: float
    seconds: float
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    delivered: int = 0
    duplicated: int = 0
    unexpected: int = 0
    out_of_order: int = 0
    lost: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def delivered_rate(self) -> float:
        return self.delivered / 2 / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> dict[str, float | int]:
        return {
            "offered_rate": self.offered_rate,
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "delivered": self.delivered,
            "delivered_msgs_per_s": round(self.delivered_rate, 1),
            "duplicated": self.duplicated,
            "unexpected": self.unexpected,
            "out_of_order": self.out_of_order,
            "lost": self.lost,
            "p50_ms": round(self.percentile(50), 2),
            "p95_ms": round(self.percentile(95), 2),
            "p99_ms": round(self.percentile(99), 2),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else 0,
        }


# Sends in flight at once, at most (a send waits for its answer or RECEIPT before its slot is
# free). PostgreSQL's baseline commits at the same concurrency.
IN_FLIGHT = 64


def body(run: str, session: int, number: int) -> str:
    return json.dumps({"run": run, "s": session, "n": number, "t": time.perf_counter()})


def parse_body(text: str, run: str, order: int | None = None) -> Delivery | None:
    """The message of ``run`` in ``text``; its order is ``order`` when the system assigned one,
    else its number."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("run") != run:
        return None
    number = int(data["n"])
    return Delivery(int(data["s"]), number, float(data["t"]), number if order is None else order)


async def run(
    receivers: list[tuple[int, StompClient]],
    sessions: int,
    send: Sender,
    extract: Extractor,
    *,
    run_id: str,
    rate: float,
    seconds: float,
    drain_seconds: float = 5.0,
    concurrency: int = IN_FLIGHT,
) -> Outcome:
    """Offer ``rate`` messages/s for ``seconds`` spread over the sessions (round robin)."""
    outcome = Outcome(rate, seconds)
    acked: set[tuple[int, int]] = set()
    seen: dict[int, set[tuple[int, int]]] = {i: set() for i in range(len(receivers))}
    last: dict[int, dict[int, int]] = {}
    total = int(rate * seconds)

    async def listen(index: int, client: StompClient) -> None:
        last[index] = {}
        async for frame in client.frames():
            if frame.command != "MESSAGE":
                continue
            parsed = extract(frame)
            if parsed is None:
                continue
            now = time.perf_counter()
            key = (parsed.session, parsed.number)
            got = seen[index]
            if key in got:
                outcome.duplicated += 1
                continue
            got.add(key)
            # in order: after everything this receiver got of the session before (by the
            # order the system assigned, which for concurrent sends is their commit order)
            if parsed.order < last[index].get(parsed.session, -1):
                outcome.out_of_order += 1
            last[index][parsed.session] = parsed.order
            outcome.delivered += 1
            outcome.latencies_ms.append((now - parsed.sent_at) * 1000)

    listeners = [asyncio.create_task(listen(i, c)) for i, (_, c) in enumerate(receivers)]
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        session = n % sessions
        try:
            await send(session, n, body(run_id, session, n))
            acked.add((session, n))
            outcome.acknowledged += 1
        except Exception:
            outcome.failed += 1
        finally:
            gate.release()

    started = time.perf_counter()
    tasks = []
    for n in range(total):
        due = started + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        outcome.sent += 1
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    outcome.seconds = max(seconds, time.perf_counter() - started)
    deadline = time.perf_counter() + drain_seconds
    expected = len(acked) * 2
    while time.perf_counter() < deadline and outcome.delivered < expected:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    for task in listeners:
        task.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    receivers_of: dict[int, list[int]] = {s: [] for s in range(sessions)}
    for index, (session, _) in enumerate(receivers):
        receivers_of[session].append(index)
    for session, number in acked:
        for index in receivers_of[session]:
            if (session, number) not in seen[index]:
                outcome.lost += 1
    all_seen: set[tuple[int, int]] = set().union(*seen.values())
    outcome.unexpected = len(all_seen - acked)
    return outcome
