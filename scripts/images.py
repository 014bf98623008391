"""Build the chat backend's images, and run the Docker engine they need on this machine.

    python scripts/images.py build [--base IMAGE] [--tag TAG] [NAME ...]
        the seven images of the Dockerfile as chat/NAME:TAG (default: all, tag dev) on
        python:3.11-slim where a registry gives it, else on a Python image made here from
        Debian's packages (debootstrap; root). `make images` runs this.
    python scripts/images.py servers
        PostgreSQL/RabbitMQ/Redis images made from Debian's packages where no registry gives
        docker-compose.yml's; prints the compose override to add (nothing when none is needed)
    python scripts/images.py engine start|stop|status
        this checkout's own dockerd (root, Debian's docker.io): images and volumes under
        .run/docker/data; `start` prints the DOCKER_HOST to export for docker and compose

Which engine: DOCKER_HOST if set, else the machine's default socket if it answers, else this
checkout's own dockerd, started for the command and stopped after it (unless it was already
running: `engine start` keeps one up across commands). CHAT_DOCKER_ENGINE=private: always the
checkout's own (what .ci/run does).
"""

from __future__ import annotations

import argparse
import sys
import time

from chat_testing import containers, docker_engine


def _build(options: argparse.Namespace) -> int:
    engine = docker_engine.connect()
    try:
        started = time.monotonic()
        base = containers.python_base(engine.client, options.base)
        built = containers.build_images(
            engine.client, base=base, tag=options.tag, only=options.names
        )
        took = time.monotonic() - started
        print(f"{len(built)} images on {base} in {took:.0f} s:", file=sys.stderr)
        for reference, image_id in built.items():
            print(f"{reference}\t{image_id}")
    finally:
        engine.close()
    return 0


def _servers(options: argparse.Namespace) -> int:
    engine = docker_engine.connect()
    try:
        override = containers.server_images(engine.client)
    finally:
        engine.close()
    if override is not None:
        print(override.relative_to(docker_engine.ROOT))
    return 0


def _engine(options: argparse.Namespace) -> int:
    paths = docker_engine.private_paths()
    if options.action == "start":
        engine = docker_engine.start_private_engine()
        engine.client.close()
        print(f"export DOCKER_HOST={paths.host}")
    elif options.action == "stop":
        if not docker_engine.stop_private_engine():
            print("this checkout's dockerd is not running", file=sys.stderr)
    else:
        running = docker_engine.private_engine_running()
        print(f"DOCKER_HOST={paths.host} ({'running' if running else 'not running'})")
        return 0 if running else 3
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the images (make images)")
    build.add_argument("--base", help="BASE_IMAGE (default: python:3.11-slim or a local one)")
    build.add_argument("--tag", default=containers.DEFAULT_TAG)
    build.add_argument("names", nargs="*", help="only these (gateway, session-svc, ...)")
    build.set_defaults(run=_build)
    servers = commands.add_parser("servers", help="local PostgreSQL/RabbitMQ/Redis images")
    servers.set_defaults(run=_servers)
    engine = commands.add_parser("engine", help="this checkout's own dockerd")
    engine.add_argument("action", choices=("start", "stop", "status"))
    engine.set_defaults(run=_engine)
    options = parser.parse_args(argv)
    try:
        return int(options.run(options))
    except docker_engine.ContainersError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
