"""The rules of a WebSocket handshake, one copy for the gateway and ws-edge (pure).

Both serve ``/ws``: the gateway relays it, and an Ingress may route it straight to the edge, so
each must answer a handshake the same way:

- :func:`origin_allowed`: browsers send ``Origin`` and must be on the allowed list; clients that
  send none (not browsers) pass; so does a same-origin request (the Origin's host is the
  ``Host`` asked, as websocket-client, and so stomp.py, sends by default).
- :func:`bearer`: the token of an ``Authorization: Bearer`` value; anything else, or an empty
  token, is no token.
- :func:`handshake_token`: ``Authorization: Bearer``, else ``?access_token=`` (browsers cannot
  set headers on a WebSocket); an empty value is no token, for both.
- :func:`client_address`: the TCP peer, or the first hop of ``X-Forwarded-For`` behind a
  trusted proxy or Ingress.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit


def origin_allowed(origin: str | None, allowed: Sequence[str], host: str | None = None) -> bool:
    if origin is None or "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    return host is not None and parts.scheme in ("http", "https") and parts.netloc == host


def bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def handshake_token(authorization: str | None, query: str) -> str | None:
    """``query`` is the request target's query string (after ``?``)."""
    token = bearer(authorization)
    if token:
        return token
    values = parse_qs(query).get("access_token", [])
    return values[0] if values and values[0] else None


def client_address(peer: str | None, forwarded_for: str | None, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for and forwarded_for:
        first = forwarded_for.split(",")[0].strip()
        if first:
            return first
    return peer or "unknown"
