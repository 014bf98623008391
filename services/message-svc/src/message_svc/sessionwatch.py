"""Keeps the roster (the cached participants of sessions) in step with blocks: one connection
LISTENs on ``chat_session_changed``, where session-svc tells each block and unblock at its
commit, and each notification forgets that session, so the next send reads it again.

A notification is lost while the connection is down, so each (re)connection forgets every
cached session; meanwhile the roster's TTL (``MEMBERS_CACHE_SECONDS``) bounds how long a
block can go unseen. Edits and deletes re-check under the session's row lock, uncached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

from chat_common import db
from chat_common.outbox import SESSION_CHANGED_CHANNEL

log = logging.getLogger(__name__)


class SessionWatch:
    def __init__(
        self,
        dsn: str,
        forget: Callable[[uuid.UUID], None],
        forget_all: Callable[[], None],
    ) -> None:
        self._dsn = dsn
        self._forget = forget
        self._forget_all = forget_all
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="session-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            self._forget(uuid.UUID(str(payload)))
        except ValueError:
            self._forget_all()

    def _listening(self, now: bool) -> None:
        if now:
            self._forget_all()  # what changed while nobody listened
            self.listening.set()
        else:
            self.listening.clear()

    async def _run(self) -> None:
        await db.keep_listening(
            self._dsn,
            SESSION_CHANGED_CHANNEL,
            self._notified,
            self._listening,
            application_name="message-svc session-watch",
            meanwhile="the roster's cache TTL",
        )
