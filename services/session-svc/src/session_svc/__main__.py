"""``python -m session_svc``: serve session-svc."""

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
    serve(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
