"""The client's address as the gateway sees it (pure): the TCP peer, or the first hop of
``X-Forwarded-For`` when the gateway runs behind a trusted proxy or Ingress."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import Scope

from chat_common.handshake import client_address


def client_ip(scope: Scope, trust_forwarded_for: bool) -> str:
    """One address for rate limits and for the ``X-Forwarded-For`` the upstreams and the
    WebSocket edge receive, for HTTP and WebSocket alike."""
    client = scope.get("client")
    return client_address(
        str(client[0]) if client else None,
        Headers(scope=scope).get("x-forwarded-for"),
        trust_forwarded_for,
    )
