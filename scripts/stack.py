"""Run the whole chat stack as local processes.

    python scripts/stack.py dev      foreground, prefixed logs, Ctrl-C stops everything
    python scripts/stack.py up       background (pid files, logs under $RUN_DIR); returns
                                     once the gateway's /readyz answers; idempotent
    python scripts/stack.py down     stops what `up` started, by pid
    python scripts/stack.py status   what is running
    python scripts/stack.py keys     create the development key pair if missing

Environment: RUN_DIR (default .run), CHAT_PORT_BASE (default 8080: gateway 8080,
session-svc 8081, message-svc 8082, ws-edge 8083, outbox-relay 8084; FlairBit stand-in
base+10), DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/chat), AMQP_VHOST
(default /; another one is created with rabbitmqctl), AMQP_BASE (default
amqp://guest:guest@127.0.0.1:5672), LOG_LEVEL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = Path(os.environ.get("RUN_DIR", ROOT / ".run")).resolve()
PORT_BASE = int(os.environ.get("CHAT_PORT_BASE", "8080"))
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/chat")
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
# Each stack on a shared broker gets its own virtual host, so that stacks (a developer's, the
# e2e tests', the benchmark's) never consume each other's chat.send or see each other's events.
AMQP_VHOST = os.environ.get("AMQP_VHOST", "/")
AMQP_BASE = os.environ.get("AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
AMQP_URL = f"{AMQP_BASE}/{urllib.parse.quote(AMQP_VHOST, safe='')}"
KEYS = RUN_DIR / "keys"


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def services() -> list[Service]:
    """The stack in start order: what a service needs is started before it."""
    flairbit_port = PORT_BASE + 10
    flairbit = f"http://127.0.0.1:{flairbit_port}"
    origins = f"http://127.0.0.1:{PORT_BASE},http://localhost:{PORT_BASE}"
    user_jwt = {
        "JWT_JWKS_URL": f"{flairbit}/.well-known/jwks.json",
        "JWT_ISSUER": "flairbit",
        "JWT_AUDIENCE": "chat",
        "LOG_LEVEL": LOG_LEVEL,
        "AMQP_URL": AMQP_URL,
    }
    return [
        Service(
            "flairbit",
            "flairbit_stub",
            flairbit_port,
            {
                "FLAIRBIT_PORT": str(flairbit_port),
                "FLAIRBIT_KEY_DIR": str(KEYS),
                "FLAIRBIT_CHAT_SERVICE_PUBLIC_KEY_FILE": str(KEYS / "chat_service_public.pem"),
            },
        ),
        Service(
            "session-svc",
            "session_svc",
            PORT_BASE + 1,
            {
                **user_jwt,
                "PORT": str(PORT_BASE + 1),
                "DATABASE_URL": DATABASE_URL,
                "FLAIRBIT_URL": flairbit,
                "SERVICE_PRIVATE_KEY_FILE": str(KEYS / "chat_service_private.pem"),
            },
        ),
        Service(
            "message-svc",
            "message_svc",
            PORT_BASE + 2,
            {**user_jwt, "PORT": str(PORT_BASE + 2), "DATABASE_URL": DATABASE_URL},
        ),
        Service(
            "ws-edge",
            "ws_edge",
            PORT_BASE + 3,
            {
                **user_jwt,
                "PORT": str(PORT_BASE + 3),
                "SESSION_SVC_URL": f"http://127.0.0.1:{PORT_BASE + 1}",
                "MESSAGE_SVC_URL": f"http://127.0.0.1:{PORT_BASE + 2}",
                "ALLOWED_ORIGINS": origins,
            },
        ),
        Service(
            "outbox-relay",
            "outbox_relay",
            PORT_BASE + 4,
            {
                "PORT": str(PORT_BASE + 4),
                "DATABASE_URL": DATABASE_URL,
                "AMQP_URL": AMQP_URL,
                "LOG_LEVEL": LOG_LEVEL,
            },
        ),
        Service(
            "gateway",
            "gateway",
            PORT_BASE,
            {
                **user_jwt,
                "PORT": str(PORT_BASE),
                "SESSION_SVC_URL": f"http://127.0.0.1:{PORT_BASE + 1}",
                "MESSAGE_SVC_URL": f"http://127.0.0.1:{PORT_BASE + 2}",
                "WS_EDGE_URL": f"ws://127.0.0.1:{PORT_BASE + 3}",
                "ALLOWED_ORIGINS": origins,
                # development only: the web client gets dev tokens through the gateway
                "DEV_TOKEN_URL": f"{flairbit}/dev/token",
            },
        ),
    ]


def ensure_keys() -> None:
    """The chat service's development key pair (for its service JWTs to FlairBit)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = KEYS / "chat_service_private.pem"
    public = KEYS / "chat_service_public.pem"
    if private.exists() and public.exists():
        return
    KEYS.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def ensure_vhost() -> None:
    """Create this stack's RabbitMQ virtual host when it is not the default one."""
    if AMQP_VHOST == "/":
        return
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        print(f"note: rabbitmqctl not found; virtual host {AMQP_VHOST!r} must exist already")
        return
    subprocess.run(
        [ctl, "-q", "add_vhost", AMQP_VHOST], capture_output=True, check=False, timeout=60
    )
    subprocess.run(
        [ctl, "-q", "set_permissions", "-p", AMQP_VHOST, "guest", ".*", ".*", ".*"],
        capture_output=True,
        check=True,
        timeout=60,
    )


def answers(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until(
    url: str, seconds: float, alive: list[subprocess.Popen[bytes]] | None = None
) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(url):
            return True
        if alive and any(p.poll() is not None for p in alive):
            return False
        time.sleep(0.1)
    return False


def command(service: Service) -> list[str]:
    return [sys.executable, "-m", service.module]


def environment(service: Service) -> dict[str, str]:
    return {**os.environ, **service.env, "PYTHONUNBUFFERED": "1"}


# ---- background mode -------------------------------------------------------------------


def pid_file(service: Service) -> Path:
    return RUN_DIR / "pids" / f"{service.name}.pid"


def running_pid(service: Service) -> int | None:
    """The pid recorded for ``service`` if that process is alive and still runs its module."""
    path = pid_file(service)
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if service.module.encode() not in cmdline:
        return None
    return pid


def up() -> int:
    ensure_keys()
    ensure_vhost()
    (RUN_DIR / "pids").mkdir(parents=True, exist_ok=True)
    (RUN_DIR / "logs").mkdir(parents=True, exist_ok=True)
    for service in services():
        if running_pid(service) is not None:
            print(f"{service.name}: already running")
            continue
        log = (RUN_DIR / "logs" / f"{service.name}.log").open("ab")
        process = subprocess.Popen(
            command(service),
            cwd=ROOT,
            env=environment(service),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        pid_file(service).write_text(str(process.pid))
        print(f"{service.name}: started, pid {process.pid}, {service.url}")
        if not wait_until(f"{service.url}/healthz", 30):
            print(f"{service.name}: did not become healthy; its log says:", file=sys.stderr)
            print(tail(RUN_DIR / "logs" / f"{service.name}.log"), file=sys.stderr)
            return 1
    gateway = services()[-1]
    if not wait_until(f"{gateway.url}/readyz", 30):
        print("the gateway is not ready (see $RUN_DIR/logs)", file=sys.stderr)
        return 1
    print(f"ready: {gateway.url}")
    return 0


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(pid: int, grace: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop_child(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a process this one started (and reap it, so it leaves no zombie)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def down() -> int:
    for service in reversed(services()):
        pid = running_pid(service)
        if pid is not None:
            stop(pid)
            print(f"{service.name}: stopped (pid {pid})")
        pid_file(service).unlink(missing_ok=True)
    return 0


def status() -> int:
    for service in services():
        pid = running_pid(service)
        state = f"running, pid {pid}" if pid else "stopped"
        print(f"{service.name:12} {state:24} {service.url}")
    return 0


# ---- foreground mode -------------------------------------------------------------------


def dev() -> int:
    ensure_keys()
    ensure_vhost()
    processes: list[tuple[Service, subprocess.Popen[bytes]]] = []
    width = max(len(s.name) for s in services())
    lock = threading.Lock()

    def pump(service: Service, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        prefix = f"{service.name:>{width}} | ".encode()
        for line in process.stdout:
            with lock:
                sys.stdout.buffer.write(prefix + line)
                sys.stdout.buffer.flush()

    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for service in services():
            process = subprocess.Popen(
                command(service),
                cwd=ROOT,
                env=environment(service),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            processes.append((service, process))
            threading.Thread(target=pump, args=(service, process), daemon=True).start()
            if not wait_until(f"{service.url}/healthz", 30, [p for _, p in processes]):
                print(f"{service.name} did not start", file=sys.stderr)
                return 1
        print(f"ready: {services()[-1].url}   (Ctrl-C stops everything)", flush=True)
        while not stopping.is_set():
            for service, process in processes:
                if process.poll() is not None:
                    print(f"{service.name} exited with {process.returncode}", file=sys.stderr)
                    return 1
            stopping.wait(0.5)
        return 0
    finally:
        for _, process in reversed(processes):
            stop_child(process)


def keys() -> int:
    ensure_keys()
    print(f"keys in {KEYS}")
    return 0


def main(argv: list[str]) -> int:
    actions = {"dev": dev, "up": up, "down": down, "status": status, "keys": keys}
    if len(argv) != 1 or argv[0] not in actions:
        print(__doc__, file=sys.stderr)
        return 2
    return actions[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
