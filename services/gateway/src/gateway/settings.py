"""Gateway settings, read once from the environment (variable = field name upper-cased)."""

from __future__ import annotations

from chat_common import settings
from chat_common.config import BaseSettings


class Settings(BaseSettings, kw_only=True, frozen=True):
    port: int = 8080
    session_svc_url: str = "http://127.0.0.1:8081"
    message_svc_url: str = "http://127.0.0.1:8082"
    ws_edge_url: str = "ws://127.0.0.1:8083"
    # Browser origins allowed by CORS and on /ws; "*" allows any.
    allowed_origins: tuple[str, ...] = ("http://127.0.0.1:8080", "http://localhost:8080")
    upstream_connect_timeout_seconds: float = 1.0
    upstream_timeout_seconds: float = 10.0
    # Connections to each upstream (session-svc, message-svc): every upstream has its own pool,
    # so one that hangs holds at most this many and the others are served as usual.
    upstream_max_connections: int = 256
    # POST /api/chat/message: grouped requests out to message-svc at once; sends arriving
    # meanwhile go together in the next (gateway.sends). 0: each send is its own request.
    send_requests_in_flight: int = 2
    # One incoming WebSocket message, in bytes: ws-edge's MAX_FRAME_BYTES (64 KiB) with slack,
    # so the edge's own limit is what clients meet (a larger message closes with 1009).
    ws_max_message_bytes: int = 80 * 1024
    # SockJS's HTTP transports under /ws/ (gateway.sockjs): their own pool of connections to
    # the edge; an answer silent this long is a dead edge (the edge's heartbeat is 25 s); the
    # largest xhr_send body (ws-edge's SOCKJS_MAX_SEND_BYTES).
    sockjs_max_connections: int = 1024
    sockjs_read_timeout_seconds: float = 60.0
    sockjs_max_send_bytes: int = 256 * 1024
    # With several edges, a SockJS session's HTTP requests must all reach the edge that holds
    # it (gateway.edges): name the edges (their http:// base URLs), or a headless Service as
    # host:port, resolved every SOCKJS_EDGES_REFRESH_SECONDS. Neither: WS_EDGE_URL (one edge).
    sockjs_edges: tuple[str, ...] = ()
    sockjs_edges_dns: str | None = None
    sockjs_edges_refresh_seconds: float = 5.0
    max_body_bytes: int = 64 * 1024
    # The bulk send (POST /api/chat/messages: up to 100 messages of up to 4 KiB each).
    bulk_max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 16 * 1024
    # Rate limits (token buckets); shared by every instance through Redis when REDIS_URL is set.
    redis_url: str | None = None
    # A Redis that does not answer within this (connect or command) refuses requests with 503.
    redis_timeout_seconds: float = 0.5
    ip_burst: int = 200
    ip_rate_per_second: float = 100.0
    user_burst: int = 100
    user_rate_per_second: float = 50.0
    ws_connect_burst: int = 10
    ws_connect_rate_per_second: float = 1.0
    # POST /api/chat/init per user, on top of the general limit: opening chats with addresses
    # one after the other is how an account would probe who uses the app.
    init_burst: int = 10
    init_rate_per_second: float = 0.2
    # Take the client address from X-Forwarded-For (only behind a trusted proxy or Ingress).
    trust_forwarded_for: bool = False
    flairbit_service_issuer: str = "flairbit"
    flairbit_service_audience: str = "chat-service"
    # Development only: the FlairBit stand-in's token URL (http://127.0.0.1:8090/dev/token).
    # When set, POST /dev/token {"email"} forwards there so the web client can sign in;
    # unset (the default, and always in production), the route does not exist (404).
    dev_token_url: str | None = None


def from_env() -> Settings:
    return settings.load(Settings)
