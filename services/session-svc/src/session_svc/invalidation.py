"""FlairBit's ``profile-changed`` for every session-svc instance, not only the one it reached.

The instance FlairBit calls forgets the profile at once, then publishes the change on a Redis
channel; every instance (itself included) listens and forgets it too. Pub/sub keeps nothing
for a listener that is not connected, so each (re)subscription first forgets every cached
profile: what an instance missed while it was cut off can be no older than that. Without
Redis (one instance, or development) the change stays local. A change that cannot be
published is answered 503, so that FlairBit sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from redis.asyncio import Redis

from chat_common.errors import RedisUnavailable
from chat_common.redis_client import faults

from .flairbit import ProfileDirectory

log = logging.getLogger(__name__)

CHANNEL = "chat:session-svc:profile-changed"


class Change(msgspec.Struct, frozen=True):
    email: str
    intent: str | None = None


_decode = msgspec.json.Decoder(Change)


class Invalidations:
    def __init__(self, profiles: ProfileDirectory, redis: Redis | None) -> None:
        self._profiles = profiles
        self._redis = redis
        self._task: asyncio.Task[None] | None = None

    async def changed(self, email: str, intent: str | None) -> None:
        """Forget the profile here, then tell the other instances."""
        await self._profiles.invalidate(email, intent)
        if self._redis is None:
            return
        with faults("the other instances' channel (Redis)"):
            await self._redis.publish(CHANNEL, msgspec.json.encode(Change(email, intent)))

    def start(self) -> None:
        if self._redis is not None:
            self._task = asyncio.create_task(self._listen(self._redis), name="profile-changes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # A cancel that lands while redis-py opens the subscription may not end the task
            # at once (seen as a shutdown hanging past the lifespan's timeout): never wait
            # more than a second for it.
            await asyncio.wait({self._task}, timeout=1.0)

    async def _listen(self, redis: Redis) -> None:
        delay = 0.2
        while True:
            pubsub = redis.pubsub()
            try:
                with faults():
                    await pubsub.subscribe(CHANNEL)
                await self._profiles.forget_all()  # what was missed meanwhile
                delay = 0.2
                while True:
                    with faults():
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=5
                        )
                    if message is not None:
                        await self._apply(message.get("data"))
            except RedisUnavailable as exc:
                log.warning("profile changes not heard (%s); subscribing again", exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)

    async def _apply(self, data: object) -> None:
        if not isinstance(data, bytes | str):
            return
        try:
            change = _decode.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("unreadable profile change on %s dropped", CHANNEL)
            return
        await self._profiles.invalidate(change.email, change.intent)
