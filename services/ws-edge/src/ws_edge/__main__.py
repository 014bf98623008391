"""``python -m ws_edge``: serve the STOMP WebSocket edge."""

from __future__ import annotations

import uvloop

from chat_common.observability import setup_logging
from chat_common.tracing import setup_tracing

from .server import main as serve
from .settings import from_env

SERVICE = "ws-edge"


def main() -> None:
    settings = from_env()
    setup_logging(SERVICE, settings.log_level)
    setup_tracing(SERVICE)
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
