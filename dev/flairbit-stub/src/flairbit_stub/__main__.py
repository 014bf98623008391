"""``python -m flairbit_stub``: serve the stand-in with uvicorn until SIGINT or SIGTERM.

uvicorn turns either signal into a graceful shutdown: stop accepting, let in-flight requests
finish (for at most a few seconds, so a ``slow`` fault cannot hold the exit), run the lifespan
shutdown, then exit; uvicorn re-raises the signal it caught, so after SIGTERM the exit
status is the conventional 143.
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from .app import create_app
from .errors import StubError
from .settings import Settings

GRACEFUL_SHUTDOWN_SECONDS = 5


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env()
    except StubError as exc:
        print(f"flairbit-stub: {exc.detail}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    # uvicorn exits by itself (status 1 or 3) when it cannot bind or the lifespan fails.
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
