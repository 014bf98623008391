"""The chat backend's images: the base images (from a registry where one answers, made locally
from Debian's packages where none does), the seven images of the one Dockerfile, and the
PostgreSQL/RabbitMQ/Redis stand-ins for docker-compose.yml. Used by ``scripts/images.py``
(``make images``) and the compose test (``make compose-test``, tests/compose).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from .docker_engine import (
    ROOT,
    RUN_DIR,
    BuildFailed,
    Log,
    say,
)

DOCKERFILE = "Dockerfile"
LOCAL_DIR = ROOT / "deploy" / "docker"  # Dockerfiles of the locally made base and server images
# ---- the images -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    """One image of the Dockerfile: its stage (``--target``) and workspace package."""

    target: str
    package: str

    @property
    def repository(self) -> str:
        return f"chat/{self.target}"


IMAGES = (
    ImageSpec("gateway", "chat-gateway"),
    ImageSpec("session-svc", "chat-session-svc"),
    ImageSpec("message-svc", "chat-message-svc"),
    ImageSpec("ws-edge", "chat-ws-edge"),
    ImageSpec("outbox-relay", "chat-outbox-relay"),
    ImageSpec("migrations", "chat-migrations"),
    ImageSpec("flairbit-stub", "flairbit-stub"),
)
DEFAULT_TAG = "dev"  # the tag docker-compose.yml names

REGISTRY_PYTHON = "python:3.11-slim"
LOCAL_DEBIAN = "chat-local/debian:bookworm"
LOCAL_PYTHON = "chat-local/python:3.11-bookworm"


@dataclass(frozen=True)
class ServerImage:
    """A server docker-compose.yml takes from a registry, and its local stand-in."""

    service: str
    registry: str
    local: str
    dockerfile: str


SERVERS = (
    ServerImage("postgres", "postgres:17", "chat-local/postgres:15", "postgres.Dockerfile"),
    ServerImage(
        "rabbitmq", "rabbitmq:4-management", "chat-local/rabbitmq:3.10", "rabbitmq.Dockerfile"
    ),
    ServerImage("redis", "redis:7-alpine", "chat-local/redis:7", "redis.Dockerfile"),
)
# Swaps the local server images in (and adapts what differs between them and the official ones).
LOCAL_SERVERS_OVERRIDE = LOCAL_DIR / "compose.local-servers.yml"

# Variables of this machine that builds need to reach the package registries. Docker passes the
# proxy ones to RUN without an ARG and keeps them out of the image.
PROXY_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
CA_BUNDLES = (
    Path("/etc/ssl/certs/ca-certificates.crt"),  # Debian, Ubuntu
    Path("/etc/pki/tls/certs/ca-bundle.crt"),  # Fedora, RHEL
    Path("/etc/ssl/cert.pem"),  # Alpine, macOS
)

# ---- building -------------------------------------------------------------------------------


def proxy_args() -> dict[str, str]:
    return {name: os.environ[name] for name in PROXY_ARGS if os.environ.get(name)}


def has_image(client: docker.DockerClient, reference: str) -> bool:
    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        return False
    return True


def obtainable(client: docker.DockerClient, reference: str, log: Log = say) -> bool:
    """The image is here, or a registry gives it now."""
    if has_image(client, reference):
        return True
    repository, _, tag = reference.partition(":")
    try:
        client.images.pull(repository, tag=tag or "latest")
    except docker.errors.DockerException as error:
        log(f"{reference}: no registry answers ({str(error).splitlines()[0][:160]})")
        return False
    return True


def build(
    client: docker.DockerClient,
    *,
    tag: str,
    context: Path,
    dockerfile: str = DOCKERFILE,
    target: str | None = None,
    args: Mapping[str, str] | None = None,
    log: Log = say,
) -> str:
    """Build one image with the classic builder (no registry needed for a Dockerfile frontend),
    on the host's network; its full log goes to .run/docker/build-<tag>.log. The image id."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    log_path = RUN_DIR / f"build-{tag.replace('/', '_').replace(':', '_')}.log"
    started = time.monotonic()
    image_id = None
    lines: list[str] = []
    with log_path.open("w") as out:
        stream = client.api.build(
            path=str(context),
            dockerfile=dockerfile,
            tag=tag,
            target=target,
            buildargs={**proxy_args(), **(args or {})},
            network_mode="host",
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        for chunk in stream:
            text = str(chunk.get("stream", ""))
            if "error" in chunk:
                text += f"ERROR: {chunk['error']}\n"
                lines.append(text)
                out.write(text)
                raise BuildFailed(
                    f"{tag} did not build ({log_path}):\n" + "".join(lines[-30:]).rstrip()
                )
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = str(chunk["aux"]["ID"])
            if text:
                lines.append(text)
                out.write(text)
    if image_id is None:
        image_id = str(client.images.get(tag).id)
    log(f"built {tag} in {time.monotonic() - started:.0f} s")
    return image_id


def _ca_bundle() -> Path:
    for path in CA_BUNDLES:
        if path.exists():
            return path
    import certifi  # the requests/httpx dependency: Mozilla's roots, at least

    return Path(certifi.where())


def make_debian_image(client: docker.DockerClient, log: Log = say) -> None:
    """Debian bookworm (minbase) made with debootstrap from Debian's own mirror (its default,
    or DEBIAN_MIRROR), imported as LOCAL_DEBIAN, with this machine's CA certificates added at
    /usr/local/share/chat/ca-certificates.crt for the builds on top of it."""
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if debootstrap is None or os.geteuid() != 0:
        raise BuildFailed(
            f"{REGISTRY_PYTHON} cannot be pulled and {LOCAL_DEBIAN} cannot be made here: that "
            "needs root and debootstrap (apt-get install -y debootstrap)"
        )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chat-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        command = [debootstrap, "--variant=minbase", "bookworm", str(rootfs)]
        if os.environ.get("DEBIAN_MIRROR"):
            command.append(os.environ["DEBIAN_MIRROR"])
        log(f"making {LOCAL_DEBIAN}: {shlex.join(command)}")
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise BuildFailed("debootstrap failed:\n" + (done.stdout + done.stderr)[-3000:])
        certs = rootfs / "usr/local/share/chat"
        certs.mkdir(parents=True)
        shutil.copyfile(_ca_bundle(), certs / "ca-certificates.crt")
        for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."], check=True
        )
        repository, _, tag = LOCAL_DEBIAN.partition(":")
        client.api.import_image_from_file(
            str(tarball), repository=repository, tag=tag, changes=['CMD ["bash"]']
        )
    log(f"made {LOCAL_DEBIAN} in {time.monotonic() - started:.0f} s")


def ensure_debian_image(client: docker.DockerClient, log: Log = say) -> str:
    if not has_image(client, LOCAL_DEBIAN):
        make_debian_image(client, log)
    return LOCAL_DEBIAN


def _build_local(client: docker.DockerClient, tag: str, dockerfile: str, log: Log) -> str:
    return build(
        client,
        tag=tag,
        context=LOCAL_DIR,
        dockerfile=dockerfile,
        args={"DEBIAN_IMAGE": ensure_debian_image(client, log)},
        log=log,
    )


def python_base(client: docker.DockerClient, requested: str | None = None, log: Log = say) -> str:
    """BASE_IMAGE for the Dockerfile: ``requested`` if given; python:3.11-slim if it is here or
    a registry gives it; else the local Debian one, made now if missing."""
    if requested:
        if not obtainable(client, requested, log):
            raise BuildFailed(f"base image {requested} is neither here nor pullable")
        return requested
    if obtainable(client, REGISTRY_PYTHON, log):
        return REGISTRY_PYTHON
    if not has_image(client, LOCAL_PYTHON):
        _build_local(client, LOCAL_PYTHON, "python.Dockerfile", log)
    log(f"base image: {LOCAL_PYTHON} (made from Debian's packages)")
    return LOCAL_PYTHON


def server_images(client: docker.DockerClient, log: Log = say) -> Path | None:
    """The compose override that swaps in local PostgreSQL/RabbitMQ/Redis images, built now,
    or None when the registry images of docker-compose.yml are all here or pullable."""
    if all(obtainable(client, s.registry, log) for s in SERVERS):
        return None
    with ThreadPoolExecutor(max_workers=len(SERVERS)) as pool:
        builds = [
            pool.submit(_build_local, client, s.local, s.dockerfile, log)
            for s in SERVERS
            if not has_image(client, s.local)
        ]
        for future in builds:
            future.result()
    return LOCAL_SERVERS_OVERRIDE


def build_images(
    client: docker.DockerClient,
    *,
    base: str,
    tag: str = DEFAULT_TAG,
    only: Iterable[str] = (),
    parallel: int = 3,
    log: Log = say,
) -> dict[str, str]:
    """Build the Dockerfile's images on ``base``: ``chat/<target>:<tag>`` -> image id. The
    first builds alone (it makes the layers every image shares), the others side by side."""
    wanted = set(only)
    unknown = wanted - {i.target for i in IMAGES}
    if unknown:
        raise BuildFailed(f"no such image: {', '.join(sorted(unknown))}")
    specs = [i for i in IMAGES if not wanted or i.target in wanted]

    def one(spec: ImageSpec) -> tuple[str, str]:
        reference = f"{spec.repository}:{tag}"
        args = {"BASE_IMAGE": base, "PACKAGE": spec.package}
        built = build(client, tag=reference, context=ROOT, target=spec.target, args=args, log=log)
        return reference, built

    if not specs:
        return {}
    results = dict([one(specs[0])])
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        results.update(pool.map(one, specs[1:]))
    return results
