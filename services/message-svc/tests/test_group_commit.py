"""Group commit: how drafts become batches (a fake writer), and batches on the real PostgreSQL
(one statement per batch, replays and reused ids inside a batch, a failing batch)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import pytest

from chat_common.batching import PacingPolicy
from chat_common.db import create_pool
from chat_common.dto import MessageView, SendMessageRequest
from chat_common.errors import Conflict
from chat_common.ratelimit import BucketPolicy
from message_svc import repository
from message_svc.events import message_event_template
from message_svc.groupcommit import GroupCommit, SessionGone
from message_svc.ratelimit import MemoryLimiter
from message_svc.repository import ClientIdTaken, Draft
from message_svc.service import MessageService, Sent

from .conftest import ChatSession, SessionFactory


async def drafts_for(
    pool: asyncpg.Pool, session: ChatSession, count: int, *, sender: str | None = None
) -> list[Draft]:
    """``count`` drafts in ``session`` from ``sender`` (its first user by default)."""
    async with pool.acquire() as conn:
        members = await repository.members(conn, session.id)
    me = next(m for m in members if m.user_email == (sender or session.a))
    made = []
    for i in range(count):
        now = dt.datetime.now(dt.UTC)
        view = MessageView(
            message_id=uuid.uuid4(),
            session_id=session.id,
            seq=0,
            sender_id=me.profile_id,
            sender_display_name=me.display_name,
            sender_email=me.user_email,
            content=f"m{i}",
            client_message_id=uuid.uuid4(),
            sent_at=now,
        )
        made.append(
            Draft(
                message_id=view.message_id,
                session_id=session.id,
                sender=me,
                content=view.content,
                client_msg_id=view.client_message_id,
                sent_at=now,
                event=message_event_template(view, members),
            )
        )
    return made


# -- batching, with a fake writer ----------------------------------------------------------


class FakeWriter:
    """Records each batch; answers every draft as new; can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[uuid.UUID]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures: list[BaseException] = []

    async def __call__(self, drafts: Sequence[Draft]) -> Mapping[int, Any]:
        self.batches.append([d.message_id for d in drafts])
        await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        return {i: {"new": True, "id": d.message_id} for i, d in enumerate(drafts)}


def fake_draft(sender: str = "a@example.com", cid: uuid.UUID | None = None) -> Draft:
    member = repository.Member(uuid.uuid4(), "dating", uuid.uuid4(), sender, "A", 0, 0)
    return Draft(
        message_id=uuid.uuid4(),
        session_id=member.session_id,
        sender=member,
        content="x",
        client_msg_id=cid or uuid.uuid4(),
        sent_at=dt.datetime.now(dt.UTC),
        event=None,  # type: ignore[arg-type]
    )


async def test_a_lone_send_goes_at_once() -> None:
    writer = FakeWriter()
    commit = GroupCommit(writer)
    draft = fake_draft()
    stored = await asyncio.wait_for(commit.store(draft), 1)
    assert stored.new
    assert writer.batches == [[draft.message_id]]


async def test_sends_arriving_during_a_write_go_together_next() -> None:
    writer = FakeWriter()
    writer.gate.clear()
    commit = GroupCommit(writer, max_batch=3)
    first = commit.enqueue(fake_draft())
    await asyncio.sleep(0)  # the first batch is being written
    later = [fake_draft() for _ in range(5)]
    futures = [commit.enqueue(d) for d in later]
    writer.gate.set()
    await asyncio.gather(first, *futures)
    assert [len(b) for b in writer.batches] == [1, 3, 2]  # at most max_batch, in order
    assert [m for b in writer.batches[1:] for m in b] == [d.message_id for d in later]


async def test_busy_sends_gather_for_the_window_and_a_quiet_send_goes_at_once() -> None:
    writer = FakeWriter()
    # busy from 15 sends/s (two at once); a window of up to 0.2 s
    pacing = PacingPolicy(max_window=0.2, target_batch=1_000, busy_rate=15.0, horizon=0.1)
    commit = GroupCommit(writer, pacing=pacing)
    loop = asyncio.get_running_loop()
    await commit.store(fake_draft())  # after a quiet spell: at once
    started = loop.time()
    close = [commit.enqueue(fake_draft()) for _ in range(3)]  # a burst: gathered
    await asyncio.sleep(0.05)
    close.append(commit.enqueue(fake_draft()))
    await asyncio.gather(*close)
    assert [len(b) for b in writer.batches] == [1, 4]
    assert loop.time() - started >= 0.1  # it waited out the window (a lower bound: robust)
    await asyncio.sleep(0.25)  # quiet again: part of the scenario (the rate decays)
    quiet = loop.time()
    await commit.store(fake_draft())
    assert loop.time() - quiet < 0.1  # bounded: at once, not after a 0.2 s window
    assert [len(b) for b in writer.batches] == [1, 4, 1]


async def test_sends_below_the_busy_rate_never_wait_for_the_window() -> None:
    writer = FakeWriter()
    pacing = PacingPolicy(max_window=5.0, target_batch=16, busy_rate=250.0)
    commit = GroupCommit(writer, pacing=pacing)
    async with asyncio.timeout(2):  # a single 5 s window would not fit
        for _ in range(10):  # about 100 sends/s, each right after the previous batch
            await commit.store(fake_draft())
            await asyncio.sleep(0.01)
    assert [len(b) for b in writer.batches] == [1] * 10


async def test_a_full_batch_does_not_wait_for_the_window() -> None:
    writer = FakeWriter()
    pacing = PacingPolicy(max_window=5.0, target_batch=1_000, busy_rate=1.0)
    commit = GroupCommit(writer, pacing=pacing, max_batch=3)
    await commit.store(fake_draft())
    async with asyncio.timeout(1):  # not the 5 s window
        await asyncio.gather(*(commit.enqueue(fake_draft()) for _ in range(3)))
    assert [len(b) for b in writer.batches] == [1, 3]


async def test_a_repeated_client_id_in_a_batch_is_written_once() -> None:
    writer = FakeWriter()
    writer.gate.clear()
    commit = GroupCommit(writer)
    blocker = commit.enqueue(fake_draft())
    await asyncio.sleep(0)
    cid = uuid.uuid4()
    one, two = fake_draft(cid=cid), fake_draft(cid=cid)
    first, again = commit.enqueue(one), commit.enqueue(two)
    other_sender = commit.enqueue(fake_draft("b@example.com", cid))
    writer.gate.set()
    await blocker
    assert (await first).new
    replay = await again
    assert (replay.new, replay.row["id"]) == (False, one.message_id)
    assert (await other_sender).new
    assert len(writer.batches[1]) == 2  # one's repeat is not written; the other sender's is
    assert writer.batches[1][0] == one.message_id


async def test_a_failed_batch_fails_every_caller_and_the_next_batch_goes() -> None:
    writer = FakeWriter()
    writer.gate.clear()
    commit = GroupCommit(writer)
    blocker = commit.enqueue(fake_draft())
    await asyncio.sleep(0)
    doomed = [commit.enqueue(fake_draft()) for _ in range(3)]
    writer.failures = [OSError("connection reset")]
    writer.gate.set()
    with pytest.raises(OSError, match="connection reset"):
        await blocker
    for future in doomed:
        assert (await future).new  # the batch after the failed one was written
    writer.failures = [ValueError("x")]
    results = await asyncio.gather(
        *(commit.store(fake_draft()) for _ in range(2)), return_exceptions=True
    )
    assert any(isinstance(r, ValueError) for r in results)


async def test_a_client_id_stored_meanwhile_makes_the_batch_go_again() -> None:
    writer = FakeWriter()
    writer.failures = [ClientIdTaken()]
    commit = GroupCommit(writer)
    stored = await commit.store(fake_draft())
    assert stored.new
    assert len(writer.batches) == 2


async def test_a_draft_without_an_answer_is_a_session_gone() -> None:
    async def write(drafts: Sequence[Draft]) -> Mapping[int, Any]:
        return {}

    with pytest.raises(SessionGone):
        await GroupCommit(write).store(fake_draft())


# -- batches on PostgreSQL ------------------------------------------------------------------


async def write_with(pool: asyncpg.Pool, drafts: Sequence[Draft]) -> Mapping[int, Any]:
    async with pool.acquire() as conn:
        return await repository.insert_batch(conn, drafts)


async def held(pool: asyncpg.Pool, session: ChatSession) -> tuple[GroupCommit, asyncio.Event]:
    """A group commit on the database whose first batch (a message of its own in
    ``session``) is being written until the event is set: what is enqueued meanwhile goes
    as one batch."""
    gate = asyncio.Event()

    async def write(drafts: Sequence[Draft]) -> Mapping[int, Any]:
        await gate.wait()
        return await write_with(pool, drafts)

    commit = GroupCommit(write)
    (first,) = await drafts_for(pool, session, 1, sender=session.b)
    commit.enqueue(first)
    await asyncio.sleep(0)
    return commit, gate


async def test_one_statement_stores_a_batch_with_gapless_seqs_per_session(
    db_pool: asyncpg.Pool, new_session: SessionFactory
) -> None:
    one = await new_session()
    two = await new_session(b="carol@example.com")
    a1, a2, a3 = await drafts_for(db_pool, one, 3)
    (b1,) = await drafts_for(db_pool, two, 1)
    rows = await write_with(db_pool, [a1, b1, a2, a3])
    assert [(rows[i]["new"], rows[i]["seq"]) for i in range(4)] == [
        (True, 1),
        (True, 1),
        (True, 2),
        (True, 3),
    ]
    outbox = await db_pool.fetch(
        "SELECT session_id, headers, payload FROM chat_message_outbox ORDER BY id"
    )
    assert [json.loads(r["headers"])["x-seq"] for r in outbox] == [1, 1, 2, 3]
    assert [json.loads(r["payload"])["content"] for r in outbox] == ["m0", "m0", "m1", "m2"]
    assert await db_pool.fetchval("SELECT last_seq FROM chat_sessions WHERE id = $1", one.id) == 3


async def test_a_replay_inside_one_batch_is_stored_once(
    db_pool: asyncpg.Pool, new_session: SessionFactory
) -> None:
    session = await new_session()
    (draft,) = await drafts_for(db_pool, session, 1)
    again = dataclasses.replace(draft, message_id=uuid.uuid4())  # a retry: same client id
    commit, gate = await held(db_pool, session)
    first, second = commit.enqueue(draft), commit.enqueue(again)  # one batch
    gate.set()
    stored, replayed = await first, await second
    assert (stored.new, replayed.new) == (True, False)
    assert replayed.row["id"] == stored.row["id"] == draft.message_id
    sender_rows = "SELECT count(*) FROM chat_messages WHERE sender_email = $1"
    assert await db_pool.fetchval(sender_rows, session.a) == 1
    assert await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox") == 2  # and b's
    # and a later batch answers it from the table
    later = await commit.store(dataclasses.replace(draft, message_id=uuid.uuid4()))
    assert (later.new, later.row["id"]) == (False, draft.message_id)


async def test_a_failing_batch_answers_every_caller_with_the_error(
    db_pool: asyncpg.Pool, new_session: SessionFactory
) -> None:
    session = await new_session()
    drafts = await drafts_for(db_pool, session, 3)
    broken = dataclasses.replace(
        drafts[1],
        event=dataclasses.replace(
            drafts[1].event,
            entry=dataclasses.replace(drafts[1].event.entry, routing_key=None),  # type: ignore[arg-type]
        ),
    )
    commit, gate = await held(db_pool, session)
    futures = [commit.enqueue(d) for d in (drafts[0], broken, drafts[2])]  # one batch
    gate.set()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, asyncpg.NotNullViolationError) for r in results), results
    sender_rows = "SELECT count(*) FROM chat_messages WHERE sender_email = $1"
    assert await db_pool.fetchval(sender_rows, session.a) == 0
    assert await db_pool.fetchval("SELECT last_seq FROM chat_sessions") == 1  # b's alone


def service(pool: asyncpg.Pool) -> MessageService:
    limiter = MemoryLimiter(BucketPolicy(100_000, 100_000.0), 100_000, 30.0)
    return MessageService(pool, limiter, 4096)


def request(session: ChatSession, content: str, cid: uuid.UUID | None = None) -> Any:
    return SendMessageRequest(
        session_id=session.id, content=content, client_message_id=cid or uuid.uuid4()
    )


async def test_a_client_id_reused_for_another_session_inside_one_batch_is_409(
    db_pool: asyncpg.Pool, new_session: SessionFactory
) -> None:
    one = await new_session()
    two = await new_session(b="carol@example.com")
    cid = uuid.uuid4()
    messages = service(db_pool)
    first, reused, replay = await messages.send_many(
        one.a, [request(one, "x", cid), request(two, "x", cid), request(one, "x", cid)]
    )
    assert isinstance(first, Sent)
    assert not first.replayed
    assert isinstance(reused, Conflict)
    assert reused.code == "CLIENT_MESSAGE_ID_REUSED"
    assert isinstance(replay, Sent)
    assert replay.replayed
    assert replay.message.message_id == first.message.message_id
    assert await db_pool.fetchval("SELECT count(*) FROM chat_messages") == 1
    await messages.close()


async def test_concurrent_sends_share_statements_and_keep_seqs_gapless(
    db_pool: asyncpg.Pool, new_session: SessionFactory
) -> None:
    sessions = [await new_session(b=f"peer{i}@example.com") for i in range(4)]
    messages = service(db_pool)
    batches_before = _batches()
    sent = await asyncio.gather(
        *(messages.send(s.a, request(s, f"m{i}")) for i in range(25) for s in sessions)
    )
    assert len(sent) == 100
    batches = _batches() - batches_before
    assert batches < 20, batches  # a hundred sends, a handful of statements
    for s in sessions:
        seqs = sorted(m.message.seq for m in sent if m.message.session_id == s.id)
        assert seqs == list(range(1, 26))
    await messages.close()


async def test_a_bulk_send_keeps_its_order_within_a_session(
    db_pool: asyncpg.Pool, new_session: SessionFactory
) -> None:
    session = await new_session()
    messages = service(db_pool)
    results = await messages.send_many(session.a, [request(session, f"n{i}") for i in range(50)])
    assert [r.message.seq for r in results if isinstance(r, Sent)] == list(range(1, 51))
    assert [r.message.content for r in results if isinstance(r, Sent)] == [
        f"n{i}" for i in range(50)
    ]
    await messages.close()


def _batches() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("chat_send_batch_size_count") or 0.0


async def test_the_batch_statement_keeps_using_the_client_id_index_as_the_table_grows(
    db_pool: asyncpg.Pool, database_url: str, new_session: SessionFactory
) -> None:
    """The service's pool plans each execution for its parameters: a plan cached while
    chat_messages was empty (a full scan is cheapest then) must not be used once it holds
    thousands of rows. Counted with PostgreSQL's own per-table scan counter, for the one
    backend and transaction that stores the batch (no other connection's counts mixed in)."""
    pool = await create_pool(database_url, max_size=1)  # the services' pool, one connection
    try:
        session = await new_session()
        async with pool.acquire() as conn:
            for _ in range(8):  # enough executions for PostgreSQL to weigh a generic plan
                await repository.insert_batch(conn, await drafts_for(db_pool, session, 1))
            # their scans (of a table still empty) leave this backend's pending counts now
            await conn.execute("SELECT pg_stat_force_next_flush()")
        other = await new_session("carol@example.com", "dave@example.com")
        await db_pool.execute(
            """
            INSERT INTO chat_messages (id, session_id, seq, sender_profile_id, sender_email,
                                       sender_display_name, content, client_msg_id, sent_at)
            SELECT gen_random_uuid(), $1, n, $2, 'carol@example.com', 'Carol', 'm' || n,
                   gen_random_uuid(), now()
            FROM generate_series(1, 20000) AS n
            """,
            other.id,
            other.a_profile,
        )
        drafts = await drafts_for(db_pool, session, 1)
        async with pool.acquire() as conn, conn.transaction():
            stored = await repository.insert_batch(conn, drafts)
            scans = await conn.fetchval(
                "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'chat_messages'"
            )
        assert stored[0]["new"] is True
        assert scans == 0
    finally:
        await pool.close()
