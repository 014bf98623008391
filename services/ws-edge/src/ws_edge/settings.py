"""ws-edge settings, read once from the environment (variable = field name upper-cased)."""

from __future__ import annotations

import os
import socket

import msgspec

from chat_common import settings
from chat_common.config import BaseSettings


def _instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings, kw_only=True, frozen=True):
    port: int = 8083
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    session_svc_url: str = "http://127.0.0.1:8081"
    message_svc_url: str = "http://127.0.0.1:8082"
    # Names this process: its queue (ws-edge.{instance_id}) and its connection ids.
    instance_id: str = msgspec.field(default_factory=_instance)
    # The queue message-svc consumes /app/chat.send from (message-svc's SEND_QUEUE).
    send_queue: str = "chat.send"
    amqp_prefetch: int = 256
    # Handled deliveries acknowledged by one basic.ack (multiple) at most, and the longest one
    # waits for its ack; the batch is also capped at half the prefetch.
    ack_batch: int = 64
    ack_delay_seconds: float = 0.005
    # Browser origins allowed to open /ws; clients that send no Origin are allowed; "*" = any.
    allowed_origins: tuple[str, ...] = ("http://127.0.0.1:8080", "http://localhost:8080")
    # STOMP heart-beats this edge offers (send) and asks for (expect), in ms; 0 = none.
    heartbeat_send_ms: int = 10_000
    heartbeat_expect_ms: int = 10_000
    # WebSocket pings, for clients that negotiate no STOMP heart-beats; 0 = off.
    ws_ping_interval_seconds: float = 20.0
    # Per connection: bytes waiting to be written before the client counts as too slow, and
    # how long a too-slow client gets to take the close frame before the socket is dropped.
    max_outbound_bytes: int = 1 << 20
    slow_close_seconds: float = 2.0
    max_subscriptions: int = 64
    max_unacked: int = 1024
    max_frame_bytes: int = 64 * 1024
    max_body_bytes: int = 16 * 1024
    # Live events held per topic subscription while its x-resume-after-seq replay or a gap
    # fill runs.
    resume_max_buffered: int = 10_000
    # A gap in a topic's seqs is fetched from message-svc's history: this many attempts, the
    # first retry after gap_fill_backoff_seconds, doubling; then what arrived is delivered.
    gap_fill_attempts: int = 3
    gap_fill_backoff_seconds: float = 0.2
    # /app/chat.send: "direct" asks message-svc over HTTP (pipelined per connection; the
    # chat.send queue only when message-svc does not answer), "queue" always goes through the
    # chat.send queue.
    send_route: str = "direct"
    # SENDs of one connection waiting for message-svc's answer, at most.
    max_waiting_sends: int = 1_000
    # Requests storing SENDs out to message-svc at once, for all connections together; what
    # arrives meanwhile goes in the next one (chat_common.grouping).
    send_requests_in_flight: int = 2
    # WebSocket handshakes per client address (token bucket; 0: not limited here). Behind the
    # gateway every handshake comes from the gateway, which limits per address itself: set
    # TRUST_FORWARDED_FOR (the gateway and an Ingress send X-Forwarded-For) to count clients.
    connect_ip_burst: int = 0
    connect_ip_rate_per_second: float = 5.0
    trust_forwarded_for: bool = False
    # Open STOMP connections per user across every edge (0: no cap), counted in Redis when
    # REDIS_URL is set (else per edge); an edge renews its connections' leases every third
    # of CONNECTION_LEASE_SECONDS, so a dead edge's connections stop counting within one.
    max_connections_per_user: int = 20
    connection_lease_seconds: float = 60.0
    redis_url: str | None = None
    # Presence (online / last seen, pushed to the user's peers on /user/queue/presence): each
    # connection holds a lease in Redis renewed every third of PRESENCE_LEASE_SECONDS, so a
    # dead edge's users go offline within a lease plus a sweep; the last close is announced
    # after PRESENCE_GRACE_SECONDS (a reconnect within it announces nothing); every edge
    # sweeps for expired users every PRESENCE_SWEEP_SECONDS. Without REDIS_URL, per edge.
    presence_lease_seconds: float = 30.0
    presence_grace_seconds: float = 3.0
    presence_sweep_seconds: float = 1.0
    presence_key_prefix: str = "chat:presence:"
    redis_timeout_seconds: float = 0.5
    # SUBSCRIBE and UNSUBSCRIBE frames per connection (token bucket); past it, ERROR and close.
    subscribes_burst: int = 100
    subscribes_per_second: float = 10.0
    # SENDs per connection (token bucket over every /app destination).
    sends_burst: int = 20
    sends_per_second: float = 10.0
    membership_cache_seconds: float = 30.0
    membership_cache_negative_seconds: float = 5.0
    membership_cache_entries: int = 50_000
    upstream_timeout_seconds: float = 5.0
    # SockJS under /ws/ (ws_edge.sockjs_http): a session no request received for this long is
    # over; one xhr_send body at most this big; a streaming response ends after this many
    # bytes; "h" after this long without a frame.
    sockjs_disconnect_delay_seconds: float = 5.0
    sockjs_max_send_bytes: int = 256 * 1024
    sockjs_stream_limit_bytes: int = 128 * 1024
    sockjs_heartbeat_seconds: float = 25.0
    delivered_flush_seconds: float = 0.25
    shutdown_grace_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.send_route not in ("direct", "queue"):
            raise ValueError(f"send_route must be 'direct' or 'queue', got {self.send_route!r}")
        if self.max_waiting_sends < 1:
            raise ValueError("max_waiting_sends must be >= 1")
        if self.ack_batch < 1 or self.ack_delay_seconds < 0:
            raise ValueError("ack_batch must be >= 1 and ack_delay_seconds >= 0")
        if self.send_requests_in_flight < 1:
            raise ValueError("send_requests_in_flight must be >= 1")
        if (
            self.presence_lease_seconds <= 0
            or self.presence_grace_seconds < 0
            or self.presence_sweep_seconds <= 0
        ):
            raise ValueError(
                "presence_lease_seconds and presence_sweep_seconds must be > 0, "
                "presence_grace_seconds >= 0"
            )
        if self.max_connections_per_user < 0 or self.connection_lease_seconds <= 0:
            raise ValueError(
                "max_connections_per_user must be >= 0 and connection_lease_seconds > 0"
            )


def from_env() -> Settings:
    return settings.load(Settings)
