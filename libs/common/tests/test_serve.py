"""The server settings every service runs with."""

from __future__ import annotations

from starlette.applications import Starlette

from chat_common.serve import DEFAULT_WS_MAX_SIZE, server_config


def test_the_websocket_message_bound_is_the_callers() -> None:
    app = Starlette()
    bounded = server_config(app, host="127.0.0.1", port=1, ws_max_size=80 * 1024)
    default = server_config(app, host="127.0.0.1", port=1)
    assert bounded.ws_max_size == 80 * 1024
    assert default.ws_max_size == DEFAULT_WS_MAX_SIZE
    assert bounded.access_log is False
    assert bounded.server_header is False
    assert bounded.proxy_headers is False  # X-Forwarded-For is each service's own decision
    assert bounded.ws_per_message_deflate is False  # small frames: not worth the CPU
