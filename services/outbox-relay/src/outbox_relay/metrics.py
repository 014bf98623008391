"""The relay's Prometheus metrics (served on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PUBLISHED = Counter("chat_outbox_published_total", "Outbox rows published and confirmed")
RETRIES = Counter(
    "chat_outbox_retries_total", "Failed publishes of outbox rows that will be retried"
)
DEAD = Counter("chat_outbox_dead_total", "Outbox rows that ended dead after their last attempt")
RELEASED = Counter(
    "chat_outbox_released_total",
    "Claimed outbox rows let go unpublished (broker lost, shutdown, behind a failed row)",
)
PENDING = Gauge("chat_outbox_pending_rows", "Outbox rows waiting to be published")
LAG = Gauge("chat_outbox_oldest_pending_seconds", "Age of the oldest outbox row (lag)")
ROTATIONS = Counter("chat_outbox_rotations_total", "Moves of the outbox's current partition")
TRUNCATED = Counter(
    "chat_outbox_truncations_total", "Drained outbox partitions emptied with TRUNCATE"
)
WAITING_PARTITIONS = Gauge(
    "chat_outbox_partitions_waiting",
    "Outbox partitions past their turn that still hold rows (not truncated yet)",
)
LATENCY = Histogram(
    "chat_outbox_publish_latency_seconds",
    "From an outbox row's creation (its transaction) to the broker's confirm",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
STALE_ROUNDS = Counter(
    "chat_outbox_stale_rounds_total",
    "Relay rounds ended by another relay because they were held past the lease",
)
