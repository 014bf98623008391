"""The web client in headless Chromium (Debian's ``chromium``) driven by Playwright, against the
whole stack started with ``make up`` on its own ports, run dir and database.

Skipped, with the reason, when Playwright or a Chromium binary is missing: install them with
``apt-get install -y chromium`` and the ``playwright`` package (never ``playwright install``;
the tests use the system browser through ``executable_path``). ``CHROMIUM`` overrides the path.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
BROWSER_DATABASE_URL = os.environ.get(
    "BROWSER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/chat_browser"
)
BROWSER_AMQP_VHOST = os.environ.get("BROWSER_AMQP_VHOST", "chat_browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the web client in headless Chromium")


def chromium_path() -> str | None:
    wanted = os.environ.get("CHROMIUM")
    if wanted:
        return wanted if Path(wanted).exists() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def _ports_free(base: int, count: int = 11) -> bool:
    for port in range(base, base + count):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def port_base(start: int = 19080) -> int:
    for base in range(start, 30000, 100):
        if _ports_free(base):
            return base
    raise RuntimeError("no free block of ports for the browser-test stack")


@dataclass(frozen=True)
class Stack:
    gateway: str
    flairbit: str
    env: dict[str, str]
    run_dir: Path

    def make(self, target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", target],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def token(self, email: str) -> str:
        answer = httpx.post(f"{self.flairbit}/dev/token", json={"email": email}, timeout=5)
        answer.raise_for_status()
        return str(answer.json()["token"])

    def api(self, email: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.gateway,
            headers={"Authorization": f"Bearer {self.token(email)}"},
            timeout=10,
        )

    def pids(self) -> list[int]:
        return [int(p.read_text()) for p in (self.run_dir / "pids").glob("*.pid")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium: apt-get install -y chromium (or set CHROMIUM to its path)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the Python package playwright is not installed (uv pip install playwright)")
    return path


@pytest.fixture(scope="session")
def stack(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack as tests/e2e starts it, plus what the web client needs from the gateway."""
    name = BROWSER_DATABASE_URL.rsplit("/", 1)[1]
    admin = BROWSER_DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    # A clean virtual host too (`make up` creates it): no queue left over from an earlier run.
    ctl = shutil.which("rabbitmqctl")
    if ctl is not None:
        subprocess.run(
            [ctl, "-q", "delete_vhost", BROWSER_AMQP_VHOST],
            capture_output=True,
            check=False,
            timeout=60,
        )
    base = port_base()
    run_dir = tmp_path_factory.mktemp("browser-stack")
    gateway = f"http://127.0.0.1:{base}"
    flairbit = f"http://127.0.0.1:{base + 10}"
    env = {
        **os.environ,
        "RUN_DIR": str(run_dir),
        "CHAT_PORT_BASE": str(base),
        "DATABASE_URL": BROWSER_DATABASE_URL,
        "AMQP_VHOST": BROWSER_AMQP_VHOST,
        # What scripts/stack.py should give the gateway in development (the page's origin
        # must be allowed on /ws, and the page signs in through the gateway's /dev/token).
        "DEV_TOKEN_URL": f"{flairbit}/dev/token",
        "ALLOWED_ORIGINS": f"{gateway},http://localhost:{base}",
    }
    stack = Stack(gateway, flairbit, env, run_dir)
    started = stack.make("up")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield stack
    finally:
        pids = stack.pids()
        stopped = stack.make("down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        left = [pid for pid in pids if _alive(pid)]
        assert not left, f"make down left processes behind: {left}"


def live_edge_missing(stack: Stack) -> str | None:
    """None when a STOMP CONNECT through the gateway's /ws is answered; else why not."""
    from websockets.exceptions import InvalidStatus, WebSocketException
    from websockets.sync.client import connect
    from websockets.typing import Subprotocol

    url = stack.gateway.replace("http://", "ws://") + "/ws"
    token = stack.token("probe@example.com")
    frame = f"CONNECT\naccept-version:1.2\nhost:chat\nAuthorization:Bearer {token}\n\n\0"
    try:
        with connect(url, subprotocols=[Subprotocol("v12.stomp")], open_timeout=5) as ws:
            ws.send(frame)
            answer = ws.recv(timeout=5)
    except InvalidStatus as exc:
        return f"/ws handshake answered {exc.response.status_code}"
    except (OSError, TimeoutError, WebSocketException) as exc:
        return f"/ws gave no STOMP session ({type(exc).__name__}: {exc})"
    text = answer if isinstance(answer, str) else answer.decode(errors="replace")
    if not text.startswith("CONNECTED"):
        return f"/ws answered {text.splitlines()[0] if text else 'nothing'}"
    return None


@pytest.fixture(scope="session")
def live_stack(stack: Stack) -> Stack:
    """The stack, when it runs the WebSocket edge (and so can deliver live)."""
    reason = live_edge_missing(stack)
    if reason is not None:
        pytest.skip(f"the stack runs no usable WebSocket edge yet: {reason}")
    return stack


@pytest.fixture(scope="module")  # sync Playwright holds a loop: end it with the module
def browser(chromium: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watched:
    """A page and what went wrong in it: uncaught errors and CSP violations."""

    page: Page
    context: BrowserContext
    errors: list[str]
    console: list[str]

    def check_clean(self) -> None:
        assert self.errors == [], self.errors


@pytest.fixture
def new_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Pages in contexts of their own; each page's console is kept in tests/artifacts/."""
    made: list[Watched] = []

    def make() -> Watched:
        context = browser.new_context(viewport={"width": 1100, "height": 760})
        page = context.new_page()
        page.set_default_timeout(15_000)
        watched = Watched(page, context, [], [])
        page.on("pageerror", lambda exc: watched.errors.append(f"page error: {exc}"))

        def on_console(message: Any) -> None:
            watched.console.append(f"{message.type}: {message.text}")
            if "Content Security Policy" in message.text:
                watched.errors.append(f"CSP: {message.text}")

        page.on("console", on_console)
        made.append(watched)
        return watched

    try:
        yield make
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for number, watched in enumerate(made, 1):
            log = ARTIFACTS / f"{request.node.name}-page{number}.console.log"
            log.write_text("\n".join(watched.console + watched.errors) + "\n")
            watched.context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
