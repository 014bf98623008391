"""The web client in headless Chromium (Debian's ``chromium``) driven by Playwright, against the
whole stack started with ``make up`` on its own ports, run dir and database.

Chromium is Debian's ``chromium`` (``make test`` installs it when it can, through
``scripts/test-tools.sh``), driven by the ``playwright`` package through ``executable_path``
(never ``playwright install``). ``CHROMIUM`` overrides the path. A missing browser fails these
tests; they are skipped only on request (``SKIP_BROWSER=1``), and the summary then says so.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

from chat_testing.stack import ROOT, Stack, running_stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

ARTIFACTS = ROOT / "tests" / "artifacts"
# Per pytest process, so that two runs side by side never share a database or vhost.
BROWSER_DATABASE_URL = os.environ.get(
    "BROWSER_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/chat_browser_{os.getpid()}"
)
BROWSER_AMQP_VHOST = os.environ.get("BROWSER_AMQP_VHOST", f"chat_browser_{os.getpid()}")
# Redis as in production (limits, seats, presence): a database of this suite's own, emptied first.
BROWSER_REDIS_DB = 5
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


SKIP_REQUESTED = os.environ.get("SKIP_BROWSER") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the web client in headless Chromium")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SKIP_REQUESTED:
        terminalreporter.section("browser tests", sep="!")
        terminalreporter.write_line(
            "SKIP_BROWSER=1: the web client was NOT tested in a browser in this run", red=True
        )


def chromium_path() -> str | None:
    wanted = os.environ.get("CHROMIUM")
    if wanted:
        return wanted if Path(wanted).exists() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="session")
def chromium() -> str:
    if SKIP_REQUESTED:
        pytest.skip("SKIP_BROWSER=1 asked to skip the browser tests")
    path = chromium_path()
    if path is None:
        pytest.fail(
            "no Chromium: apt-get install -y chromium (or set CHROMIUM to its path;"
            " SKIP_BROWSER=1 skips these tests)",
            pytrace=False,
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the Python package playwright is not installed (make install)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def stack(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack as tests/e2e starts it (scripts/stack.py gives the gateway DEV_TOKEN_URL and
    the page's origin)."""
    redis.Redis(port=6379, db=BROWSER_REDIS_DB).flushdb()
    with running_stack(
        tmp_path_factory.mktemp("browser-stack"),
        database_url=BROWSER_DATABASE_URL,
        vhost=BROWSER_AMQP_VHOST,
        first_port=19080,
        extra_env={"REDIS_URL": f"redis://127.0.0.1:6379/{BROWSER_REDIS_DB}"},
    ) as started:
        yield started


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
    """The stack, checked to answer a STOMP CONNECT on /ws (so it can deliver live)."""
    reason = live_edge_missing(stack)
    if reason is not None:
        pytest.fail(f"the stack's WebSocket edge is not usable: {reason}", pytrace=False)
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
        # The console names no URL for a failed request: the log gets each server error's.
        page.on(
            "response",
            lambda response: (
                watched.console.append(
                    f"http {response.status}: {response.request.method} {response.url}"
                )
                if response.status >= 500
                else None
            ),
        )
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
