"""What Redis keeps of a deleted user, removed: every key named by the user's email or user
key (presence and last seen, connection leases, seats, rate-limit buckets, the duplicate-content
marks of their sends), and the user's entry in the presence deadlines.

The keys are found with ``SCAN ... MATCH`` (:func:`session_svc.domain.cache_patterns`), so
the services' key layouts need not be listed here: erasure is rare and a scan of the keyspace
is cheap beside it. Every service keeps its shared state on the one Redis session-svc is given
(``REDIS_URL``), as deployed.
"""

from __future__ import annotations

from redis.asyncio import Redis

from chat_common import routing
from chat_common.redis_client import faults

from .domain import cache_patterns

SCAN_COUNT = 1000


async def forget_user(redis: Redis, email: str, presence_prefix: str) -> int:
    """Delete the user's keys; how many entries went (keys, and the deadline entry)."""
    user_key = routing.user_key(email)
    removed = 0
    with faults("Redis (the erasure's caches)"):
        for pattern in cache_patterns(email, user_key):
            batch: list[bytes] = []
            async for key in redis.scan_iter(match=pattern, count=SCAN_COUNT):
                batch.append(key)
                if len(batch) >= SCAN_COUNT:
                    removed += int(await redis.delete(*batch))
                    batch = []
            if batch:
                removed += int(await redis.delete(*batch))
        removed += int(await redis.zrem(f"{presence_prefix}deadlines", user_key))
    return removed
