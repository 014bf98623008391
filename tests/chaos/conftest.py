"""The fault-injection suite's stack, knobs and figures.

One stack (``make up`` on its own ports, run dir, database, RabbitMQ virtual host and Redis
database, reaching all three through proxies a test can cut or blackhole) for the whole suite,
with timeouts short enough that a few seconds of SIGSTOP outlast them. Each test runs a steady
load, injects one fault, heals it, and checks the outcome (chat_testing.load); the figures of
every test are printed at the end of the run (terminal summary) and written as JSON under the
test's tmp dir.

Environment: CHAOS_SECONDS (load window per fault, default 4; the benchmark machine uses 60),
CHAOS_RATE (messages/s in total, default 50), CHAOS_SESSIONS (default 10)."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from chat_testing.load import Report
from chat_testing.stack import Stack, running_stack
from chat_testing.tcpproxy import BackgroundProxy

CHAOS_DATABASE_URL = os.environ.get(
    "CHAOS_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/chat_chaos_{os.getpid()}"
)
CHAOS_AMQP_VHOST = os.environ.get("CHAOS_AMQP_VHOST", f"chat_chaos_{os.getpid()}")
CHAOS_REDIS_DB = 7  # the stack's limits, seats and invalidations: a database of their own

# Shorter than the defaults so that a pause of a few seconds is "beyond the timeouts":
# the gateway and ws-edge give up on a stopped upstream after 2.5 s, a relay's lease (and its
# write-back transaction, idle_in_transaction_session_timeout) runs out after 3 s. The limits on
# connection attempts and requests per address are raised: this suite is not about them, and
# 20 clients reconnecting at once from one address would otherwise wait on them.
CHAOS_ENV = {
    "UPSTREAM_TIMEOUT_SECONDS": "2.5",
    "LEASE_SECONDS": "3",
    "PUBLISH_TIMEOUT_SECONDS": "2",
    "WS_CONNECT_BURST": "1000",
    "WS_CONNECT_RATE_PER_SECOND": "100",
    "IP_BURST": "5000",
    "IP_RATE_PER_SECOND": "2000",
    "LOG_LEVEL": "WARNING",
    # ws-edge acknowledges its deliveries a quarter second late, so an edge fault always finds
    # deliveries handed to clients but not yet acknowledged to RabbitMQ.
    "ACK_DELAY_SECONDS": "0.25",
}


@dataclass(frozen=True)
class Knobs:
    seconds: float
    rate: float
    sessions: int

    @property
    def fault_at(self) -> float:
        """Seconds of steady load before the fault."""
        return max(1.0, self.seconds * 0.25)

    @property
    def pause(self) -> float:
        """How long a SIGSTOP or an outage lasts: beyond the timeouts above."""
        return max(4.0, self.seconds * 0.15)

    @property
    def after_heal(self) -> float:
        """Load that goes on at least this long once the fault is healed."""
        return max(1.0, self.seconds * 0.25)


@pytest.fixture(scope="session")
def knobs() -> Knobs:
    return Knobs(
        seconds=float(os.environ.get("CHAOS_SECONDS", "4")),
        rate=float(os.environ.get("CHAOS_RATE", "50")),
        sessions=int(os.environ.get("CHAOS_SESSIONS", "10")),
    )


@dataclass(frozen=True)
class Links:
    """The stack's links to PostgreSQL, RabbitMQ and Redis: each service reaches them through
    a proxy of this process (its own thread), which a test can cut or blackhole. The tests'
    own checks go to the servers directly."""

    postgres: BackgroundProxy
    rabbitmq: BackgroundProxy
    redis: BackgroundProxy


@pytest.fixture(scope="session")
def links() -> Iterator[Links]:
    found = Links(
        postgres=BackgroundProxy("127.0.0.1", 5432).start(),
        rabbitmq=BackgroundProxy("127.0.0.1", 5672).start(),
        redis=BackgroundProxy("127.0.0.1", 6379).start(),
    )
    try:
        yield found
    finally:
        for proxy in (found.postgres, found.rabbitmq, found.redis):
            proxy.stop()


def _via(url: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


@pytest.fixture(scope="session")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory, links: Links) -> Iterator[Stack]:
    redis.Redis(port=6379, db=CHAOS_REDIS_DB).flushdb()  # no seat or bucket of an earlier run
    with running_stack(
        tmp_path_factory.mktemp("chaos-stack"),
        database_url=_via(CHAOS_DATABASE_URL, links.postgres.port),
        vhost=CHAOS_AMQP_VHOST,
        first_port=26080,
        extra_env={
            **CHAOS_ENV,
            "AMQP_BASE": f"amqp://guest:guest@127.0.0.1:{links.rabbitmq.port}",
            "REDIS_URL": f"redis://127.0.0.1:{links.redis.port}/{CHAOS_REDIS_DB}",
        },
    ) as started:
        yield started


REPORTS: list[Report] = []


@pytest.fixture(scope="session")
def reports() -> list[Report]:
    """Where each test leaves its figures for the terminal summary."""
    return REPORTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTS:
        return
    terminalreporter.section("chaos: figures per fault")
    for report in REPORTS:
        terminalreporter.write_line(report.line())
