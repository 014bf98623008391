"""Every Prometheus metric of the edge, in one place (the modules that count import them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge("chat_ws_connections", "Open WebSocket connections on this edge")
SUBSCRIPTIONS = Gauge("chat_ws_subscriptions", "Accepted STOMP subscriptions on this edge")
BOUND_KEYS = Gauge("chat_ws_bound_keys", "Routing keys this edge's queue is bound to")
EVENTS = Counter("chat_ws_events_total", "Events received from the broker", ["event"])
DELIVERED = Counter("chat_ws_delivered_total", "MESSAGE frames queued to clients", ["event"])
RESUME_DROPPED = Counter(
    "chat_ws_resume_duplicates_total",
    "Messages dropped at a replay or gap-fill seam (already delivered, or fetched twice)",
)
GAP_FILLS = Counter(
    "chat_ws_gap_fills_total",
    "Gaps in a topic subscription's seqs fetched from history, by outcome",
    ["outcome"],
)
DISCONNECTS = Counter("chat_ws_disconnects_total", "Connections closed, by reason", ["reason"])
SENDS = Counter(
    "chat_edge_sends_total",
    "/app/chat.send messages by how they were answered",
    ["outcome"],
)
HISTORY_PAGES = Counter(
    "chat_edge_history_pages_total",
    "History pages asked of message-svc (resumes and gap fills)",
)
SEATS_REFUSED = Counter(
    "chat_ws_seats_refused_total", "Connections refused: the user holds the most allowed"
)
SEATS_DEGRADED = Counter(
    "chat_ws_seats_degraded_total",
    "Seat checks answered by this edge alone because Redis could not be reached",
)
PRESENCE_CHANGES = Counter(
    "chat_ws_presence_changes_total",
    "Presence changes this edge announced to the users' peers",
    ["state"],
)
SOCKJS_SESSIONS = Counter(
    "chat_ws_sockjs_sessions_total",
    "SockJS sessions opened on this edge, by the transport that opened them",
    ["transport"],
)
