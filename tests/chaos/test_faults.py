"""One fault at a time under a steady load, on the running stack, with Jepsen-style counts.

Each test: N sessions of two users, both users subscribed live to their session's topic
through the gateway, the two sending in turns over REST at a fixed total rate (retrying 5xx,
429 and timeouts with the same ``clientMessageId``); after ``fault_at`` seconds of load the
fault is injected, held, healed; the load goes on, stops; the retries settle and the
deliveries drain; then (chat_testing.load) every acknowledged message must have reached every
participant exactly once after de-duplication by ``messageId``, in seq order, and be in the
history; nothing refused may appear anywhere. Duplicates on the wire are counted, not failed.

Restarting PostgreSQL or RabbitMQ disturbs every other user of this machine's servers: those
tests always bring them back and wait until they answer (even on failure)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from chat_testing.load import Load, Report
from chat_testing.stack import Stack

from .conftest import Knobs, Links

pytestmark = pytest.mark.timeout(150)

# A fault's steps. ``inject`` may answer the moment the fault really began, if it first had
# to wait for the right one (recovery is measured from there).
Step = Callable[[], Awaitable[float | None]]


async def run_fault(
    stack: Stack,
    knobs: Knobs,
    name: str,
    inject: Step,
    heal: Step,
    *,
    hold: float = 0.0,
    send_path: str = "rest",
) -> Report:
    """Load; ``inject``; wait ``hold`` s; ``heal`` (always, once injected); more load; check."""
    load = Load(
        stack.gateway,
        stack.flairbit,
        sessions=knobs.sessions,
        rate=knobs.rate,
        name=name,
        send_path=send_path,
    )
    await load.open()
    load.start()
    fault_at = healed_at = None
    try:
        await asyncio.sleep(knobs.fault_at)
        fault_at = time.monotonic()
        try:
            fault_at = await inject() or fault_at
            await asyncio.sleep(hold)
        finally:
            await heal()
            healed_at = time.monotonic()
        rest = max(load.started_at + knobs.seconds, healed_at + knobs.after_heal)
        await asyncio.sleep(max(0.0, rest - time.monotonic()))
    finally:
        report = await load.finish(fault_at=fault_at, healed_at=healed_at)
    return report


def judge(report: Report, tmp_path: Path, reports: list[Report]) -> None:
    """Print and keep the figures, then hold the run to its guarantees."""
    reports.append(report)
    (tmp_path / "figures.json").write_text(json.dumps(report.figures(), indent=2))
    print(f"\n{report.line()}\n{json.dumps(report.figures(), indent=2)}")
    assert report.acknowledged > 0, "nothing was acknowledged: the stack never recovered"
    assert report.lost == 0, report.examples
    assert not report.problems(), (report.problems(), report.examples)
    assert report.indeterminate == 0, "some sends never got an answer after the fault"
    assert report.never_tried == 0, "some sends were still queued when the load gave up"
    assert report.recovered_after_s is not None, "no message sent after the fault got through"


async def _to_thread(fn: Callable[[], object]) -> None:
    await asyncio.to_thread(fn)


def _runs(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, has no command line)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


async def _gone(pid: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while _runs(pid):
        assert time.monotonic() < deadline, f"pid {pid} still runs after SIGKILL"
        await asyncio.sleep(0.02)


def kill_and_restart(stack: Stack, service: str) -> tuple[Step, Step]:
    async def inject() -> None:
        pid = stack.signal(service, signal.SIGKILL)
        await _gone(pid)

    async def heal() -> None:
        await _to_thread(lambda: stack.start_service(service))

    return inject, heal


def pause(stack: Stack, service: str, instance: int = 1) -> tuple[Step, Step]:
    async def inject() -> None:
        stack.signal(service, signal.SIGSTOP, instance)

    async def heal() -> None:
        stack.signal(service, signal.SIGCONT, instance)

    return inject, heal


# ---- the services ---------------------------------------------------------------------------


async def test_kill_message_svc(
    chaos_stack: Stack, knobs: Knobs, tmp_path: Path, reports: list[Report]
) -> None:
    """kill -9 message-svc, then start it again at once (same port, same environment)."""
    inject, heal = kill_and_restart(chaos_stack, "message-svc")
    report = await run_fault(chaos_stack, knobs, "kill -9 message-svc", inject, heal)
    judge(report, tmp_path, reports)


async def test_kill_message_svc_under_stomp_sends(
    chaos_stack: Stack, knobs: Knobs, tmp_path: Path, reports: list[Report]
) -> None:
    """The same with every message sent over STOMP (SEND /app/chat.send with a receipt): a
    SEND in flight when message-svc dies is answered later through the send queue, or not at
    all and retried; a RECEIPT always means a stored row, and nothing is lost."""
    inject, heal = kill_and_restart(chaos_stack, "message-svc")
    report = await run_fault(
        chaos_stack, knobs, "kill -9 message-svc, STOMP sends", inject, heal, send_path="stomp"
    )
    judge(report, tmp_path, reports)


async def test_kill_outbox_relay(
    chaos_stack: Stack, knobs: Knobs, tmp_path: Path, reports: list[Report]
) -> None:
    """kill -9 the only outbox-relay, then start it again at once: its claimed rows wait for
    their lease to run out, then go out."""
    inject, heal = kill_and_restart(chaos_stack, "outbox-relay")
    report = await run_fault(chaos_stack, knobs, "kill -9 outbox-relay", inject, heal)
    judge(report, tmp_path, reports)


async def test_kill_ws_edge(
    chaos_stack: Stack, knobs: Knobs, tmp_path: Path, reports: list[Report]
) -> None:
    """kill -9 the ws-edge every client is on (the gateway relays /ws to one edge URL) at a
    moment RabbitMQ counts deliveries to it that it has not acknowledged yet (its acks go in
    batches), then restart it on the same port: the clients' sockets close, they reconnect
    through the gateway with backoff and resume with ``x-resume-after-seq``."""
    kill, heal = kill_and_restart(chaos_stack, "ws-edge")
    unacked: list[int] = []

    async def inject() -> float:
        unacked.append(await _until_unacked(chaos_stack, "ws-edge."))
        began = time.monotonic()
        await kill()
        return began

    report = await run_fault(chaos_stack, knobs, "kill -9 ws-edge", inject, heal)
    print(f"deliveries not acknowledged when the edge was killed: {unacked}")
    judge(report, tmp_path, reports)


async def _until_unacked(stack: Stack, prefix: str, within: float = 10.0) -> int:
    """Wait until a queue named ``prefix...`` in the stack's vhost has deliveries that are
    not acknowledged yet; their count."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.skip("no rabbitmqctl on this machine")
    deadline = time.monotonic() + within
    while True:
        listed = await asyncio.to_thread(
            _run,
            ctl,
            "-q",
            "list_queues",
            "-p",
            stack.env["AMQP_VHOST"],
            "name",
            "messages_unacknowledged",
            "--no-table-headers",
            timeout=30,
        )
        for line in listed.stdout.splitlines():
            name, _, count = line.strip().rpartition("\t")
            if name.startswith(prefix) and count.isdigit() and int(count) > 0:
                return int(count)
        assert time.monotonic() < deadline, f"no unacknowledged deliveries: {listed.stdout!r}"
        await asyncio.sleep(0.05)


async def test_sigstop_message_svc(
    chaos_stack: Stack, knobs: Knobs, tmp_path: Path, reports: list[Report]
) -> None:
    """SIGSTOP message-svc longer than the gateway's upstream timeout (sends answer 504 and are
    retried while the stopped process still holds the first attempts), then SIGCONT."""
    inject, heal = pause(chaos_stack, "message-svc")
    report = await run_fault(
        chaos_stack, knobs, "SIGSTOP message-svc", inject, heal, hold=knobs.pause
    )
    judge(report, tmp_path, reports)


# Outbox rows a relay's round holds: the rows no other transaction could lock right now.
HELD = (
    "SELECT (SELECT count(*) FROM chat_message_outbox)"
    " - (SELECT count(*) FROM (SELECT 1 FROM chat_message_outbox FOR UPDATE SKIP LOCKED) f)"
)


def _claimed_rows(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(HELD).fetchone()
        return int(row[0]) if row else 0


def _stop_holding_claims(stack: Stack, within: float = 5.0) -> tuple[int, int, float]:
    """SIGSTOP the (only) relay at a moment its round holds rows: watch the outbox, stop it
    when rows are held, and keep it stopped only if they still are (else SIGCONT and watch
    again). Returns (rows it holds, stops tried, when it was stopped); 0 rows if it never got
    caught."""
    url = stack.env["DATABASE_URL"]
    deadline = time.monotonic() + within
    tries = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(HELD).fetchone()
            if not row or not row[0]:
                continue
            stack.signal("outbox-relay", signal.SIGSTOP)
            stopped_at = time.monotonic()
            tries += 1
            held = _claimed_rows(url)
            if held:
                return held, tries, stopped_at
            stack.signal("outbox-relay", signal.SIGCONT)
    stack.signal("outbox-relay", signal.SIGSTOP)
    return 0, tries, time.monotonic()


@pytest.fixture
def relay_standby(chaos_stack: Stack) -> Iterator[None]:
    """Stops the second relay the test starts (whatever happens)."""
    try:
        yield
    finally:
        chaos_stack.stop_service("outbox-relay", 2)


async def test_sigstop_outbox_relay(
    chaos_stack: Stack, knobs: Knobs, tmp_path: Path, reports: list[Report], relay_standby: None
) -> None:
    """SIGSTOP the only relay while its round holds rows (caught mid-round by watching the
    outbox), start a second relay, keep the first stopped beyond its lease (the server ends its
    round, the second takes its rows over and publishes them), then SIGCONT: the woken relay's
    stale round fails (a duplicate publish at most) and must not delete or lose rows."""
    held: dict[str, int] = {}

    async def inject() -> float:
        rows, tries, stopped_at = await asyncio.to_thread(_stop_holding_claims, chaos_stack)
        held.update(claimed_rows_held=rows, stops_tried=tries)
        await _to_thread(lambda: chaos_stack.start_service("outbox-relay", 2))
        return stopped_at

    async def heal() -> None:
        chaos_stack.signal("outbox-relay", signal.SIGCONT)

    report = await run_fault(
        chaos_stack, knobs, "SIGSTOP outbox-relay", inject, heal, hold=knobs.pause
    )
    report.notes.update(held)
    judge(report, tmp_path, reports)
    assert held["claimed_rows_held"] > 0, "the relay was never caught holding claimed rows"


# ---- the servers ----------------------------------------------------------------------------


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _pg_cluster() -> list[str]:
    ctl = shutil.which("pg_ctlcluster")
    versions = sorted(Path("/etc/postgresql").glob("*/main"))
    if ctl is None or not versions:
        pytest.skip("no pg_ctlcluster cluster on this machine")
    return [ctl, "--skip-systemctl-redirect", versions[-1].parent.name, "main"]


def _pg_up(within: float = 60) -> None:
    """Start the cluster if it is down; return once it takes a query."""
    deadline = time.monotonic() + within
    started = False
    while True:
        try:
            with psycopg.connect(
                "postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=2
            ) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
        if not started:
            _run(*_pg_cluster(), "start")
            started = True
        time.sleep(0.2)


@contextlib.asynccontextmanager
async def _postgres_back() -> AsyncIterator[None]:
    try:
        yield
    finally:
        await _to_thread(_pg_up)


async def test_restart_postgresql(
    chaos_stack: Stack, knobs: Knobs, tmp_path: Path, reports: list[Report]
) -> None:
    """PostgreSQL stopped in immediate mode (a crash: no checkpoint, recovery at start), down
    for a second, started again."""
    cluster = _pg_cluster()

    async def inject() -> float:
        stopped = await asyncio.to_thread(_run, *cluster, "stop", "-m", "immediate")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        down_at = time.monotonic()
        await asyncio.sleep(1.0)
        return down_at

    async def heal() -> None:
        await _to_thread(lambda: _run(*cluster, "start"))
        await _to_thread(_pg_up)

    async with _postgres_back():
        report = await run_fault(chaos_stack, knobs, "restart PostgreSQL", inject, heal)
    judge(report, tmp_path, reports)
    # without its database a service answers 503 (retry), never 500
    assert not [e for e in report.errors if e.startswith("500")], report.errors


def _rabbit_up(within: float = 90) -> None:
    """Start the RabbitMQ application (or the node, if it is down); return once it answers."""
    ctl = shutil.which("rabbitmqctl")
    assert ctl is not None
    if _run(ctl, "-q", "start_app", timeout=60).returncode != 0:
        server = shutil.which("rabbitmq-server")
        assert server is not None
        _run(server, "-detached", timeout=60)
    _run(ctl, "-q", "await_startup", "--timeout", str(int(within)), timeout=within + 10)
    deadline = time.monotonic() + within
    while not _answers(5672):
        assert time.monotonic() < deadline, "RabbitMQ does not answer on 5672"
        time.sleep(0.2)


async def test_restart_rabbitmq(
    chaos_stack: Stack, knobs: Knobs, tmp_path: Path, reports: list[Report]
) -> None:
    """``rabbitmqctl stop_app``, down for a second, ``start_app``: every connection to the
    broker drops; ws-edge closes its clients, who reconnect and resume; the relay retries."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.skip("no rabbitmqctl on this machine")

    async def inject() -> float:
        stopped = await asyncio.to_thread(_run, ctl, "-q", "stop_app")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        down_at = time.monotonic()
        await asyncio.sleep(1.0)
        return down_at

    async def heal() -> None:
        await _to_thread(_rabbit_up)

    try:
        report = await run_fault(chaos_stack, knobs, "restart RabbitMQ", inject, heal)
    finally:
        await _to_thread(_rabbit_up)
    judge(report, tmp_path, reports)


# ---- the links to the shared servers ---------------------------------------------------------


async def test_redis_down(
    chaos_stack: Stack, knobs: Knobs, links: Links, tmp_path: Path, reports: list[Report]
) -> None:
    """Redis unreachable for 5 s (every link reset, new ones refused) under load: the gateway's
    limits fall back to its own buckets, a send whose limits cannot be reserved answers 503 and
    is retried; nothing acknowledged is lost, and no request hangs."""

    async def inject() -> None:
        links.redis.cut()

    async def heal() -> None:
        links.redis.restore()

    report = await run_fault(chaos_stack, knobs, "Redis down 5 s", inject, heal, hold=5.0)
    judge(report, tmp_path, reports)
    assert not [e for e in report.errors if "Timeout" in e], report.errors


@pytest.mark.parametrize("server", ["postgres", "rabbitmq"])
async def test_blackholed_server(
    chaos_stack: Stack,
    knobs: Knobs,
    links: Links,
    tmp_path: Path,
    reports: list[Report],
    server: str,
) -> None:
    """Every connection to PostgreSQL (or RabbitMQ), open or new, answers nothing for 10 s,
    and refuses nothing (a link that drops packets, not one that is down): no request hangs past
    its timeout (the load's own 5 s would count a timeout), no acknowledged message is lost,
    and everything recovers within seconds once the bytes flow again."""
    proxy = links.postgres if server == "postgres" else links.rabbitmq

    async def inject() -> None:
        proxy.blackhole()

    async def heal() -> None:
        proxy.restore()

    report = await run_fault(
        chaos_stack, knobs, f"blackholed {server} 10 s", inject, heal, hold=10.0
    )
    judge(report, tmp_path, reports)
    assert not [e for e in report.errors if "Timeout" in e], report.errors
    # from the fault's start: the 10 s of silence, then a few seconds at most
    assert report.recovered_after_s is not None
    assert report.recovered_after_s < 10 + 5, report.recovered_after_s
