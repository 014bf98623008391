"""``python -m gateway``: serve the gateway."""

from __future__ import annotations

from chat_common.observability import setup_logging
from chat_common.serve import serve
from chat_common.tracing import setup_tracing

from .app import SERVICE, create_app
from .settings import from_env


def main() -> None:
    settings = from_env()
    setup_logging(SERVICE, settings.log_level)
    setup_tracing(SERVICE)
    serve(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.ws_max_message_bytes,
    )


if __name__ == "__main__":
    main()
