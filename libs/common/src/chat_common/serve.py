"""Run an ASGI app with uvicorn: uvloop, httptools, graceful shutdown on SIGTERM."""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp


def serve(app: ASGIApp, *, host: str, port: int, graceful_seconds: float = 10.0) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(graceful_seconds),
        limit_concurrency=10_000,
        h11_max_incomplete_event_size=16 * 1024,
    )
    uvicorn.Server(config).run()
