"""Run the whole chat stack as local processes.

    python scripts/stack.py dev      foreground, prefixed logs, Ctrl-C stops everything
    python scripts/stack.py up       background (pid files, logs under $RUN_DIR); returns
                                     once the gateway's /readyz answers; idempotent
    python scripts/stack.py down     stops what `up` started, by pid
    python scripts/stack.py status   what is running
    python scripts/stack.py keys     create the development key pair if missing
    python scripts/stack.py start SERVICE [INSTANCE]
                                     start one service of the `up` stack again (after a crash
                                     or a kill -9) with the same environment; returns once its
                                     /healthz answers. INSTANCE 2..6 starts an extra instance
                                     on port base+3+INSTANCE (pid file SERVICE.INSTANCE.pid)
    python scripts/stack.py stop SERVICE [INSTANCE]
                                     stop that one process (SIGTERM, by its recorded pid)
    python scripts/stack.py restart SERVICE [INSTANCE]
                                     stop, then start

Environment: RUN_DIR (default .run), CHAT_PORT_BASE (default 8080: gateway 8080,
session-svc 8081, message-svc 8082, ws-edge 8083, outbox-relay 8084; FlairBit stand-in
base+10), DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/chat), AMQP_VHOST
(default /; another one is created with rabbitmqctl), AMQP_BASE (default
amqp://guest:guest@127.0.0.1:5672; its user administers the virtual host), LOG_LEVEL.

Each service that uses RabbitMQ gets its own user with only the permissions its job needs
(``chat_common.broker_access``), made with ``rabbitmqctl import_definitions``, with the
development passwords of docker-compose.yml (``dev-{service}``; $RUN_DIR/amqp-users.json
records them). Without rabbitmqctl every service uses AMQP_BASE's user.
"""

from __future__ import annotations

import contextlib
import json
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
    instance: int = 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def label(self) -> str:
        """The name of its pid and log files: ``ws-edge``, or ``ws-edge.2`` for an extra one."""
        return self.name if self.instance == 1 else f"{self.name}.{self.instance}"


EXTRA_INSTANCES = range(2, 7)  # ports base+5 .. base+9: the free ones of the stack's block
SINGLE_INSTANCE = ("gateway", "flairbit")  # the public port, and a stand-in with its own keys


def service_named(name: str, instance: int = 1) -> Service:
    """A service of the stack by name; an extra instance (2..6) listens on port base+3+N."""
    by_name = {s.name: s for s in services()}
    if name not in by_name:
        raise KeyError(f"no service {name!r}; the stack has {', '.join(by_name)}")
    service = by_name[name]
    if instance == 1:
        return service
    if instance not in EXTRA_INSTANCES or name in SINGLE_INSTANCE:
        raise KeyError(f"no instance {instance} of {name} (extra instances: 2..6, not {name})")
    port = PORT_BASE + 3 + instance
    return Service(name, service.module, port, {**service.env, "PORT": str(port)}, instance)


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
            {
                **user_jwt,
                "PORT": str(PORT_BASE + 2),
                "DATABASE_URL": DATABASE_URL,
                "AMQP_URL": amqp_url("message-svc"),
            },
        ),
        Service(
            "ws-edge",
            "ws_edge",
            PORT_BASE + 3,
            {
                **user_jwt,
                "PORT": str(PORT_BASE + 3),
                "AMQP_URL": amqp_url("ws-edge"),
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
                "AMQP_URL": amqp_url("outbox-relay"),
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


AMQP_USERS = RUN_DIR / "amqp-users.json"


def amqp_url(service: str) -> str:
    """The service's AMQP_URL: as its own user once :func:`ensure_broker` made them."""
    from chat_common import broker_access

    if not AMQP_USERS.exists():
        return AMQP_URL
    password = json.loads(AMQP_USERS.read_text())[service]
    base = urllib.parse.urlsplit(AMQP_BASE)
    user = urllib.parse.quote(broker_access.user_name(service, AMQP_VHOST), safe="")
    host = base.netloc.rpartition("@")[2]
    return f"{base.scheme}://{user}:{password}@{host}/{urllib.parse.quote(AMQP_VHOST, safe='')}"


def ensure_broker() -> None:
    """This stack's virtual host, and one user per service with its grant on it (one
    ``rabbitmqctl import_definitions``; AMQP_BASE's user gets every permission on the host)."""
    from chat_common import broker_access

    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        print(
            "note: rabbitmqctl not found; every service uses AMQP_BASE's user"
            + ("" if AMQP_VHOST == "/" else f" and virtual host {AMQP_VHOST!r} must exist")
        )
        AMQP_USERS.unlink(missing_ok=True)
        return
    # Development passwords, as in docker-compose.yml: the same for every stack on one broker,
    # so that a second stack on this virtual host (another RUN_DIR) cannot lock the first out.
    passwords = {service: f"dev-{service}" for service in broker_access.GRANTS}
    definitions = broker_access.definitions(AMQP_VHOST, passwords)
    admin = urllib.parse.unquote(urllib.parse.urlsplit(AMQP_BASE).username or "guest")
    definitions["permissions"].append(
        {"user": admin, "vhost": AMQP_VHOST, "configure": ".*", "write": ".*", "read": ".*"}
    )
    done = subprocess.run(
        [ctl, "-q", "import_definitions", "--format", "json"],
        input=json.dumps(definitions),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        print(f"note: rabbitmqctl could not add the services' users ({done.stderr.strip()});")
        print("      every service uses AMQP_BASE's user")
        AMQP_USERS.unlink(missing_ok=True)
        return
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    AMQP_USERS.touch(mode=0o600)
    AMQP_USERS.write_text(json.dumps(passwords))


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
    return RUN_DIR / "pids" / f"{service.label}.pid"


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


def launch(service: Service) -> bool:
    """Start ``service`` in the background unless it runs; record its pid; wait for /healthz."""
    (RUN_DIR / "pids").mkdir(parents=True, exist_ok=True)
    (RUN_DIR / "logs").mkdir(parents=True, exist_ok=True)
    if running_pid(service) is not None:
        print(f"{service.label}: already running")
        return True
    log = (RUN_DIR / "logs" / f"{service.label}.log").open("ab")
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
    print(f"{service.label}: started, pid {process.pid}, {service.url}")
    if not wait_until(f"{service.url}/healthz", 30):
        print(f"{service.label}: did not become healthy; its log says:", file=sys.stderr)
        print(tail(RUN_DIR / "logs" / f"{service.label}.log"), file=sys.stderr)
        return False
    return True


def up() -> int:
    ensure_keys()
    ensure_broker()
    for service in services():
        if not launch(service):
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


def exited(pid: int) -> bool:
    """Whether ``pid`` is gone or a zombie: exited, waiting for its parent (init, for the
    processes of `up`, which may take a while) to reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def stop(pid: int, grace: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if exited(pid):
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


def with_extras(service: Service) -> list[Service]:
    """``service`` and the extra instances of it that have a pid file."""
    if service.name in SINGLE_INSTANCE:
        return [service]
    extras = (service_named(service.name, instance) for instance in EXTRA_INSTANCES)
    return [service, *(extra for extra in extras if pid_file(extra).exists())]


def stop_one(service: Service) -> None:
    pid = running_pid(service)
    if pid is not None:
        stop(pid)
        print(f"{service.label}: stopped (pid {pid})")
    pid_file(service).unlink(missing_ok=True)


def down() -> int:
    for service in reversed(services()):
        for one in reversed(with_extras(service)):
            stop_one(one)
    return 0


def status() -> int:
    for service in services():
        for one in with_extras(service):
            pid = running_pid(one)
            state = f"running, pid {pid}" if pid else "stopped"
            print(f"{one.label:14} {state:24} {one.url}")
    return 0


def one_service(argv: list[str]) -> Service | None:
    """``SERVICE [INSTANCE]`` from the command line, or None (with a message) if unknown."""
    if len(argv) not in (1, 2) or (len(argv) == 2 and not argv[1].isdigit()):
        print("usage: stack.py start|stop|restart SERVICE [INSTANCE]", file=sys.stderr)
        return None
    try:
        return service_named(argv[0], int(argv[1]) if len(argv) == 2 else 1)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return None


def start_cmd(argv: list[str]) -> int:
    service = one_service(argv)
    if service is None:
        return 2
    ensure_keys()
    return 0 if launch(service) else 1


def stop_cmd(argv: list[str]) -> int:
    service = one_service(argv)
    if service is None:
        return 2
    stop_one(service)
    return 0


def restart_cmd(argv: list[str]) -> int:
    service = one_service(argv)
    if service is None:
        return 2
    stop_one(service)
    ensure_keys()
    return 0 if launch(service) else 1


# ---- foreground mode -------------------------------------------------------------------


def dev() -> int:
    ensure_keys()
    ensure_broker()
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
    one = {"start": start_cmd, "stop": stop_cmd, "restart": restart_cmd}
    if argv and argv[0] in one:
        return one[argv[0]](argv[1:])
    if len(argv) != 1 or argv[0] not in actions:
        print(__doc__, file=sys.stderr)
        return 2
    return actions[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
