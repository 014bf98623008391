"""Fixtures shared by every test suite of the workspace: keys, tokens, a migrated database;
and the kind of every test, as a marker (``make test-unit`` runs ``-m unit``):

- ``e2e``, ``browser``, ``chaos``, ``compose``: by directory (``tests/e2e``, ``tests/browser``,
  ``tests/chaos``, ``tests/compose``; chaos restarts the machine's PostgreSQL and RabbitMQ;
  compose builds the images and runs docker-compose.yml, only by ``make compose-test``);
- ``integration``: needs the machine's PostgreSQL, RabbitMQ or Redis: a test that asks for a
  fixture of :data:`SERVER_FIXTURES` (directly or through another fixture), or is marked so;
- ``unit``: everything else. A unit test may not reach those servers: it fails at the first
  attempt to connect to one of :data:`SERVER_PORTS`, saying how to mark it.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from redis.asyncio import Redis

from chat_migrations import apply

KINDS = ("unit", "integration", "e2e", "browser", "chaos", "compose")
BY_DIRECTORY = {"e2e": "e2e", "browser": "browser", "chaos": "chaos", "compose": "compose"}
SERVER_FIXTURES = frozenset({"database_url", "db_pool", "redis"})
SERVER_PORTS = {5432: "PostgreSQL", 5672: "RabbitMQ", 6379: "Redis"}


def pytest_configure(config: pytest.Config) -> None:
    for kind, what in (
        ("unit", "needs none of the machine's servers (make test-unit)"),
        ("integration", "needs the machine's PostgreSQL, RabbitMQ or Redis"),
        ("chaos", "restarts the machine's PostgreSQL and RabbitMQ under a running stack"),
        ("compose", "builds the images and runs docker-compose.yml (make compose-test)"),
    ):
        config.addinivalue_line("markers", f"{kind}: {what}")


def _kind(item: pytest.Item) -> str:
    """The one kind of a test: its directory's, else its marker's, else by the fixtures it uses.

    Each suite is selected by its kind alone (``make test`` runs ``-m e2e`` beside ``-m "not unit
    and not e2e and not chaos"``), so a second kind would run a test twice, or a chaos test beside
    the others: two kinds on one test stop the collection.
    """
    parts = Path(str(item.path)).relative_to(Path(__file__).parent).parts
    marked = {kind for kind in KINDS if item.get_closest_marker(kind) is not None}
    if parts[0] == "tests" and parts[1] in BY_DIRECTORY:
        marked.add(BY_DIRECTORY[parts[1]])
    if len(marked) > 1:
        raise pytest.UsageError(
            f"{item.nodeid} has the kinds {', '.join(sorted(marked))}: a test has one "
            "(tests/e2e, tests/browser, tests/chaos and tests/compose give theirs)"
        )
    if marked:
        return marked.pop()
    fixtures = set(getattr(item, "fixturenames", ()))
    return "integration" if fixtures & SERVER_FIXTURES else "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(_kind(item))


@pytest.fixture(autouse=True)
def _unit_tests_reach_no_server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test marked unit that connects to the machine's servers fails, naming the fix."""
    if request.node.get_closest_marker("unit") is None:
        return
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(address: Any) -> None:
        if isinstance(address, tuple) and len(address) >= 2 and address[1] in SERVER_PORTS:
            raise AssertionError(
                f"a unit test connected to {SERVER_PORTS[address[1]]} ({address[0]}:"
                f"{address[1]}): mark it integration (pytestmark = pytest.mark.integration)"
            )

    def guarded_connect(self: socket.socket, address: Any) -> None:
        refuse(address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        refuse(address)
        return connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)


# One database per pytest process, so that suites run side by side never share one.
TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/chat_test_{os.getpid()}"
)
TEST_REDIS_URL = "redis://127.0.0.1:6379/0"
TABLES = (
    "chat_message_outbox",
    "chat_message_outbox_dead",
    "chat_messages",
    "chat_participants",
    "chat_sessions",
    "chat_user_keys",
)


@dataclass(frozen=True)
class KeyPair:
    private: rsa.RSAPrivateKey
    private_pem: bytes
    public_pem: bytes
    kid: str


def make_key_pair(kid: str | None = None) -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyPair(
        private=key,
        private_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        public_pem=key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        kid=kid or uuid.uuid4().hex[:16],
    )


@pytest.fixture(scope="session")
def issuer_keys() -> KeyPair:
    """Stands for FlairBit's signing key in tests that do not run the stand-in."""
    return make_key_pair()


@pytest.fixture(scope="session")
def service_keys() -> KeyPair:
    """The chat service's own key pair (service JWTs to FlairBit)."""
    return make_key_pair()


TokenFactory = Callable[..., str]


@pytest.fixture(scope="session")
def make_token(issuer_keys: KeyPair) -> TokenFactory:
    def factory(
        sub: str = "alice@example.com",
        *,
        ttl: float = 600,
        iss: str | None = "flairbit",
        aud: str | None = "chat",
        key: KeyPair | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl)}
        if iss is not None:
            claims["iss"] = iss
        if aud is not None:
            claims["aud"] = aud
        claims.update(extra or {})
        signer = key or issuer_keys
        return jwt.encode(
            claims,
            signer.private,
            algorithm="RS256",
            headers={"kid": signer.kid, **(headers or {})},
        )

    return factory


def _admin_url(dsn: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/postgres"))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A freshly created and migrated test database, dropped afterwards."""
    name = urlsplit(TEST_DATABASE_URL).path.lstrip("/")
    with psycopg.connect(_admin_url(TEST_DATABASE_URL), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    apply(TEST_DATABASE_URL)
    yield TEST_DATABASE_URL
    with psycopg.connect(_admin_url(TEST_DATABASE_URL), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    """A client of the machine's Redis, database 0 (tests keep to keys of their own)."""
    client = Redis.from_url(TEST_REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test database, emptied before each test."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=20)
    assert pool is not None
    await pool.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    await pool.execute("UPDATE chat_outbox_state SET slot = 0, rotated_at = now()")
    try:
        yield pool
    finally:
        await pool.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class FlairBit:
    """A running FlairBit stand-in process."""

    url: str
    jwks_url: str
    key_dir: str
    service_private_key_file: str

    def token(self, email: str, **body: Any) -> str:
        import httpx

        answer = httpx.post(f"{self.url}/dev/token", json={"email": email, **body}, timeout=5)
        answer.raise_for_status()
        return str(answer.json()["token"])

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        answer = httpx.request(method, f"{self.url}{path}", timeout=5, **kwargs)
        answer.raise_for_status()
        return answer.json() if answer.content else None


@pytest.fixture(scope="session")
def flairbit(tmp_path_factory: pytest.TempPathFactory, service_keys: KeyPair) -> Iterator[FlairBit]:
    import subprocess
    import sys

    import httpx

    key_dir = tmp_path_factory.mktemp("flairbit-keys")
    (key_dir / "chat_service_public.pem").write_bytes(service_keys.public_pem)
    private = key_dir / "chat_service_private.pem"
    private.write_bytes(service_keys.private_pem)
    port = free_port()
    env = {
        **os.environ,
        "FLAIRBIT_PORT": str(port),
        "FLAIRBIT_KEY_DIR": str(key_dir),
        "FLAIRBIT_CHAT_SERVICE_PUBLIC_KEY_FILE": str(key_dir / "chat_service_public.pem"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "flairbit_stub"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the FlairBit stand-in did not start")
            time.sleep(0.1)
        yield FlairBit(url, f"{url}/.well-known/jwks.json", str(key_dir), str(private))
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def flairbit_reset(flairbit: FlairBit) -> FlairBit:
    """The stand-in with its faults, overrides and counters cleared."""
    flairbit.control("POST", "/dev/reset")
    return flairbit
