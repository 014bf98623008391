"""The ``/topic/session.{id}`` subscriptions of one connection: each has a
:class:`~ws_edge.resume.SeqGate`, and the ``x-resume-after-seq`` replay and any gap in the live
seqs are fetched from message-svc's history, one fetch at a time per connection (a
subscription that goes away has its fetch cancelled), while the live events wait in the gate.
A gap is fetched with a bounded number of attempts; what cannot be fetched is skipped (logged
and counted), and the later events go on.

The connection is reached through :class:`Outlet` and the history through :data:`History`, so
this module knows nothing of the socket or of the STOMP core.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from chat_stomp.frames import EncodedMessage

from chat_common.errors import ChatError

from .fanout import encode, stored_kind
from .hub import session_of
from .marks import message_id
from .metrics import GAP_FILLS, RESUME_DROPPED
from .resume import Fetch, ResumeOverflow, SeqGate

log = logging.getLogger(__name__)

Held = tuple[str, str, EncodedMessage]  # destination, message-id, encoded tail
# (session, after, up_to) -> (seq, body) in seq order: message-svc's stored events (messages,
# edits and deletes), as the user.
History = Callable[[uuid.UUID, int, int | None], AsyncIterator[tuple[int, bytes]]]


class Outlet(Protocol):
    """What the feeds need of their connection (``ws_edge.client.ClientSession``)."""

    @property
    def open(self) -> bool:
        """Not closing: deliveries are still wanted."""

    def send(
        self, subscription: str, destination: str, message_id: str, encoded: EncodedMessage
    ) -> None: ...

    def flush(self) -> None: ...

    def send_error(self, message: str) -> None:
        """An ERROR frame, then the close."""

    def refuse(self, message: str, receipt: str | None = None) -> None: ...

    async def room(self) -> None:
        """Until the connection's outbound buffer has room again."""


class TopicFeeds:
    def __init__(
        self,
        outlet: Outlet,
        history: History,
        *,
        connection: str,
        max_held: int,
        gap_fill_attempts: int,
        gap_fill_backoff_seconds: float,
    ) -> None:
        self._outlet = outlet
        self._history = history
        self._connection = connection  # for the logs
        self._max_held = max_held
        self._attempts = gap_fill_attempts
        self._backoff = gap_fill_backoff_seconds
        self._gates: dict[str, SeqGate[Held]] = {}  # one per accepted topic subscription
        self._fetching = asyncio.Lock()
        self._fetches: dict[str, asyncio.Task[None]] = {}  # the latest of each subscription
        self._tasks: set[asyncio.Task[None]] = set()  # every fetch still running

    def add(self, subscription: str, resume: int | None) -> None:
        """A topic subscription's gate, in place before its key is bound: a replay holds the
        live events from the start."""
        self._gates[subscription] = SeqGate(resume, max_buffer=self._max_held)

    def start(self, subscription: str, destination: str) -> None:
        """Once the key is bound: the replay, if the subscription asked for one."""
        gate = self._gates.get(subscription)
        fetch = None if gate is None else gate.take_fetch()
        if gate is not None and fetch is not None:
            self._start_fetch(subscription, destination, gate, fetch)

    def remove(self, subscription: str) -> None:
        self._gates.pop(subscription, None)
        fetching = self._fetches.pop(subscription, None)
        if fetching is not None:
            fetching.cancel()

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._fetches.clear()
        self._gates.clear()

    def deliver(
        self,
        subscription: str,
        destination: str,
        message_id_: str,
        encoded: EncodedMessage,
        seq: int | None,
    ) -> bool:
        """A live event for ``subscription`` through its gate; False when it has none (a user
        queue: the caller sends it as it is)."""
        gate = self._gates.get(subscription)
        if gate is None:
            return False
        try:
            ready = gate.live(seq, (destination, message_id_, encoded))
        except ResumeOverflow:
            self._outlet.send_error("too many live events held for a subscription; reconnect")
            ready = []
        for destination_, message_id__, encoded_ in ready:
            self._outlet.send(subscription, destination_, message_id__, encoded_)
        fetch = gate.take_fetch()
        if fetch is not None:  # a gap opened: fetch it, the live events wait meanwhile
            self._start_fetch(subscription, destination, gate, fetch)
        return True

    # -- fetching ------------------------------------------------------------------------

    def _start_fetch(
        self, sub_id: str, destination: str, gate: SeqGate[Held], first: Fetch
    ) -> None:
        task = asyncio.create_task(self._fetch(sub_id, destination, gate, first))
        self._fetches[sub_id] = task
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if self._fetches.get(sub_id) is finished:
                del self._fetches[sub_id]

        task.add_done_callback(done)

    def _current(self, sub_id: str, gate: SeqGate[Held]) -> bool:
        return self._gates.get(sub_id) is gate and self._outlet.open

    async def _fetch(
        self, sub_id: str, destination: str, gate: SeqGate[Held], first: Fetch
    ) -> None:
        """Fetch a range of the topic's history and deliver it, then release what the gate
        held meanwhile; again for each gap the released events open. One connection's
        fetches take turns."""
        async with self._fetching:
            if self._current(sub_id, gate):
                await self._fetch_now(sub_id, destination, gate, first)

    async def _fetch_now(
        self, sub_id: str, destination: str, gate: SeqGate[Held], first: Fetch
    ) -> None:
        session = session_of(destination)
        fetch: Fetch | None = first
        while fetch is not None:
            if fetch.up_to is None:
                if not await self._replay(sub_id, destination, session, gate, fetch.after):
                    return
                filled = True
            else:
                filled = await self._fill(sub_id, destination, session, gate, fetch)
            if not self._current(sub_id, gate):
                return
            held = gate.held
            released = gate.finish() if filled else gate.give_up()
            RESUME_DROPPED.inc(held - len(released) - gate.held)
            for destination_, message_id_, encoded_ in released:
                self._outlet.send(sub_id, destination_, message_id_, encoded_)
            self._outlet.flush()
            fetch = gate.take_fetch()

    async def _replay(
        self, sub_id: str, destination: str, session: uuid.UUID, gate: SeqGate[Held], after: int
    ) -> bool:
        """History above ``after`` in seq order (``x-resume-after-seq``); False when the
        subscription went away, or the history failed and the connection is refused."""
        try:
            return await self._deliver_history(sub_id, destination, session, gate, after, None)
        except ChatError as exc:
            self._outlet.refuse(f"cannot resume: {exc.detail}")
            return False

    async def _fill(
        self, sub_id: str, destination: str, session: uuid.UUID, gate: SeqGate[Held], gap: Fetch
    ) -> bool:
        """The messages of a gap, in seq order, with a bounded number of attempts; False when
        the gap could not be filled (what arrived is delivered, the rest is skipped)."""
        problem = ""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            after = max(gap.after, gate.last_seq or 0)  # a retry goes on from what arrived
            try:
                if not await self._deliver_history(
                    sub_id, destination, session, gate, after, gap.up_to
                ):
                    return False  # the subscription or the connection went away
            except ChatError as exc:
                problem = exc.detail
                continue
            if gate.complete:
                GAP_FILLS.labels("filled").inc()
                return True
            problem = "the history lacks part of the range"
        GAP_FILLS.labels("gave_up").inc()
        log.warning(
            "connection %s: seqs %d..%d of session %s not fetched after %d attempts (%s);"
            " delivering the later ones",
            self._connection,
            gap.after + 1,
            gap.up_to,
            session,
            self._attempts,
            problem,
        )
        return False

    async def _deliver_history(
        self,
        sub_id: str,
        destination: str,
        session: uuid.UUID,
        gate: SeqGate[Held],
        after: int,
        up_to: int | None,
    ) -> bool:
        """Stored events above ``after`` (up to ``up_to``) the gate admits, each with the
        ``x-event`` it had live (``message``, ``edit``, ``delete``), paced by the outbound
        buffer; False when the subscription or the connection went away."""
        async for seq, body in self._history(session, after, up_to):
            if not self._current(sub_id, gate):
                return False
            if not gate.admit(seq):
                RESUME_DROPPED.inc()
                continue
            encoded = encode(stored_kind(body), str(session), seq, body)
            self._outlet.send(sub_id, destination, message_id(session, seq), encoded)
            self._outlet.flush()
            await self._outlet.room()
        return self._current(sub_id, gate)
