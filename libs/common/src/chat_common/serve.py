"""Run an ASGI app with uvicorn: uvloop, httptools, graceful shutdown on SIGTERM, idle
keep-alive connections kept ``KEEP_ALIVE_SECONDS``."""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp

from .keepalive import KEEP_ALIVE_SECONDS

# uvicorn's own default: a service that takes WebSockets passes the bound its protocol needs.
DEFAULT_WS_MAX_SIZE = 16 * 1024 * 1024

__all__ = ["DEFAULT_WS_MAX_SIZE", "KEEP_ALIVE_SECONDS", "serve", "server_config"]


def server_config(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    graceful_seconds: float = 10.0,
    ws_max_size: int = DEFAULT_WS_MAX_SIZE,
) -> uvicorn.Config:
    """The server settings every service runs with. ``ws_max_size`` caps one incoming
    WebSocket message in bytes; a larger one closes the connection with 1009. WebSocket
    messages are not compressed (permessage-deflate is declined). The client
    address is the TCP peer's: uvicorn does not rewrite it from ``X-Forwarded-For`` (a service
    that trusts that header says so in its own settings, as the gateway's
    ``TRUST_FORWARDED_FOR``)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=int(graceful_seconds),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=10_000,
        h11_max_incomplete_event_size=16 * 1024,
        ws_max_size=ws_max_size,
        # Chat frames are a few hundred bytes: compressing them costs more CPU (and a deflate
        # context per connection) than the bytes it saves.
        ws_per_message_deflate=False,
    )


def serve(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    graceful_seconds: float = 10.0,
    ws_max_size: int = DEFAULT_WS_MAX_SIZE,
) -> None:
    config = server_config(
        app, host=host, port=port, graceful_seconds=graceful_seconds, ws_max_size=ws_max_size
    )
    uvicorn.Server(config).run()
