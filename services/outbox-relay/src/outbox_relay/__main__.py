"""``python -m outbox_relay``: run the relay; ``python -m outbox_relay dead ...``: operate."""

from __future__ import annotations

import sys

from chat_common.observability import setup_logging
from chat_common.serve import serve
from chat_common.tracing import setup_tracing

from .app import SERVICE, create_app
from .cli import main as cli
from .settings import from_env


def main() -> None:
    if len(sys.argv) > 1:
        sys.exit(cli(sys.argv[1:]))
    settings = from_env()
    setup_logging(SERVICE, settings.log_level)
    setup_tracing(SERVICE)
    serve(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        graceful_seconds=settings.shutdown_grace_seconds,
    )


if __name__ == "__main__":
    main()
