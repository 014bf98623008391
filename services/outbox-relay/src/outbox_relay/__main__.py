"""``python -m outbox_relay``: run the relay; ``python -m outbox_relay dead ...``: operate."""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) > 1:  # operator commands need neither the web stack nor tracing
        from .cli import main as cli

        sys.exit(cli(sys.argv[1:]))

    from chat_common.observability import setup_logging
    from chat_common.serve import serve
    from chat_common.tracing import setup_tracing

    from .app import SERVICE, create_app
    from .settings import from_env

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
