"""The relay's SQL on the real PostgreSQL: claims held by a transaction, the transaction as the
fence, order, backoff, dead rows, requeue, and the rotation of the outbox's partitions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat_testing.waiting import eventually
from outbox_relay import repository

from .conftest import Insert, autovacuum_off, bury_rows, held_rows, statuses
from .oracle import OutboxRow, RowState, publishable_in_order


def ids(rows: list[repository.Claimed]) -> list[int]:
    return [r.id for r in rows]


class Round:
    """A relay's round by hand: a transaction on its own connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.transaction = conn.transaction()
        self.ended = False

    async def __aenter__(self) -> Round:
        await self.transaction.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.ended and not self.conn.is_closed():
            await self.transaction.rollback()

    async def claim(self, limit: int = 10) -> list[int]:
        return ids(await repository.claim(self.conn, limit))

    async def commit(self) -> None:
        self.ended = True
        await self.transaction.commit()


@pytest.fixture
async def connections(database_url: str) -> AsyncIterator[list[asyncpg.Connection]]:
    opened = [await asyncpg.connect(database_url) for _ in range(2)]
    try:
        yield opened
    finally:
        for conn in opened:
            await conn.close()


async def test_a_claim_holds_due_rows_in_id_order_until_its_transaction_ends(
    db_pool: asyncpg.Pool, insert: Insert, connections: list[asyncpg.Connection]
) -> None:
    first, second, third = await insert([uuid.uuid4(), None, uuid.uuid4()], notify=False)
    one, two = connections
    async with Round(one) as round_one:
        assert await round_one.claim() == [first, second, third]
        async with Round(two) as round_two:
            assert await round_two.claim() == []  # held by the open round
        assert await held_rows(db_pool) == 3
    # the round ended without writing: every row is free again, no attempt counted
    async with Round(two) as again:
        assert await again.claim() == [first, second, third]
    assert await statuses(db_pool) == {"waiting": 3}


async def test_a_round_the_server_ended_changes_nothing(
    db_pool: asyncpg.Pool, insert: Insert, connections: list[asyncpg.Connection]
) -> None:
    """The transaction is the fence: a relay paused past its lease has its session ended
    (idle_in_transaction_session_timeout); another relay takes the rows; the paused one's late
    write-back and commit fail and change nothing."""
    rows = await insert([uuid.uuid4(), uuid.uuid4()], notify=False)
    stale, fresh = connections
    async with Round(stale) as paused:
        assert await paused.claim() == rows
        pid = stale.get_server_pid()
        await db_pool.execute("SELECT pg_terminate_backend($1)", pid)

        async def ended() -> bool:  # the backend is gone, and its locks with it
            return not await db_pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
            )

        await eventually(ended, within=5)
        async with Round(fresh) as taking_over:
            assert await taking_over.claim() == rows
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
                await repository.delete_published(stale, rows)
            assert await repository.delete_published(fresh, rows[:1]) == 1
            await taking_over.commit()
    assert [r["id"] for r in await db_pool.fetch("SELECT id FROM chat_message_outbox")] == [rows[1]]


async def test_a_relay_round_held_past_the_lease_is_ended_by_another_relay(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert
) -> None:
    """Whatever its connection's state, a relay transaction older than the lease is ended, and
    its rows are free; younger ones and other applications' transactions are left alone."""
    rows = await insert([uuid.uuid4(), uuid.uuid4()], notify=False)
    stuck = await asyncpg.connect(
        database_url, server_settings={"application_name": "outbox-relay frozen"}
    )
    bystander = await asyncpg.connect(
        database_url, server_settings={"application_name": "someone else"}
    )
    try:
        await stuck.transaction().start()  # never ended by its owner: the server ends it
        assert ids(await repository.claim(stuck, 10)) == rows
        async with Round(bystander):
            await bystander.execute("SELECT 1")
            async with db_pool.acquire() as conn:
                assert await repository.end_stale_rounds(conn, lease_seconds=30) == 0
                await asyncio.sleep(0.3)  # the scenario: both rounds outlive a 0.2 s lease
                assert await repository.end_stale_rounds(conn, lease_seconds=0.2) == 1
            assert await bystander.fetchval("SELECT 1") == 1  # not a relay: untouched

        async def ended() -> bool:
            return await held_rows(db_pool) == 0

        await eventually(ended, within=5)
    finally:
        stuck.terminate()
        await bystander.close()
    async with db_pool.acquire() as conn, conn.transaction():
        assert ids(await repository.claim(conn, 10)) == rows


async def test_session_order_holds_across_a_row_in_backoff_and_dead_rows_block_nothing(
    db_pool: asyncpg.Pool, insert: Insert, connections: list[asyncpg.Connection]
) -> None:
    session = uuid.uuid4()
    first, second = await insert([session, session], notify=False)
    other = await insert([uuid.uuid4()], notify=False)
    conn, _ = connections
    async with Round(conn) as attempt:
        assert await attempt.claim(limit=1) == [first]
        assert await repository.retry_later(
            conn, first, retry_count=1, delay_seconds=60, error="nack"
        )
        await attempt.commit()
    async with Round(conn) as round_:
        # the second row waits behind the first; other sessions go on
        assert await round_.claim() == other
    retrying = await db_pool.fetchrow("SELECT * FROM chat_message_outbox WHERE id = $1", first)
    assert retrying is not None
    assert (retrying["retry_count"], retrying["last_error"]) == (1, "nack")
    async with Round(conn) as burying:
        assert await repository.bury(conn, first, retry_count=10, error="gone")
        await burying.commit()
    async with Round(conn) as round_:
        # a dead row no longer blocks its session (DEAD_BLOCKS_SESSION is False)
        assert await round_.claim() == [second, *other]
    assert await statuses(db_pool) == {"waiting": 2, "dead": 1}


async def test_a_row_locked_by_another_claimer_holds_back_its_session(
    db_pool: asyncpg.Pool, insert: Insert, connections: list[asyncpg.Connection]
) -> None:
    """SKIP LOCKED steps over a row another transaction holds; the later rows of that row's
    session must not be taken instead (they would overtake it)."""
    held, other = uuid.uuid4(), uuid.uuid4()
    first, second, third = await insert([held, held, other], notify=False)
    blocker, conn = connections
    async with Round(blocker):
        await blocker.execute("SELECT 1 FROM chat_message_outbox WHERE id = $1 FOR UPDATE", first)
        async with Round(conn) as round_:
            assert await round_.claim() == [third]
    async with Round(conn) as round_:
        assert await round_.claim() == [first, second, third]


async def test_a_row_beyond_the_batch_limit_is_not_overtaken(
    insert: Insert, connections: list[asyncpg.Connection]
) -> None:
    session = uuid.uuid4()
    rows = await insert([session, session, session], notify=False)
    one, two = connections
    async with Round(one) as first_round:
        assert await first_round.claim(limit=2) == rows[:2]
        async with Round(two) as second_round:
            assert await second_round.claim() == []  # its head is held
        await repository.delete_published(one, rows[:2])
        await first_round.commit()
    async with Round(two) as second_round:
        assert await second_round.claim() == rows[2:]


async def test_backlog_counts_waiting_rows_and_the_oldest_age(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    async with db_pool.acquire() as conn:
        assert await repository.backlog(conn) == (0, 0.0)
        rows = await insert([uuid.uuid4() for _ in range(3)], notify=False)
        await conn.execute(
            "UPDATE chat_message_outbox SET created_at = now() - interval '90 seconds'"
            " WHERE id = $1",
            rows[0],
        )
    await bury_rows(db_pool, rows[2:])
    async with db_pool.acquire() as conn:
        count, age = await repository.backlog(conn)
    assert count == 2
    assert 89 < age < 120


async def test_requeue_moves_only_dead_rows_and_wakes_the_relays(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert
) -> None:
    dead, alive = await insert([uuid.uuid4(), uuid.uuid4()], notify=False)
    await bury_rows(db_pool, [dead], error="boom")
    woken = asyncio.Event()
    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener(repository.CHANNEL, lambda *_: woken.set())
        async with db_pool.acquire() as conn:
            assert await repository.requeue(conn, [dead, alive]) == [dead]
            await asyncio.wait_for(woken.wait(), 5)
            assert await repository.requeue(conn, None) == []
    finally:
        await listener.close()
    row = await db_pool.fetchrow("SELECT * FROM chat_message_outbox WHERE id = $1", dead)
    assert row is not None
    assert row["retry_count"] == 0
    assert row["last_error"] == "boom"  # kept as history
    assert await statuses(db_pool) == {"waiting": 2}


async def test_dead_rows_are_listed_in_id_order_up_to_a_limit_and_counted(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    rows = await insert([uuid.uuid4() for _ in range(4)], notify=False)
    await bury_rows(db_pool, rows[1:])
    async with db_pool.acquire() as conn:
        assert [r["id"] for r in await repository.dead_rows(conn, 2)] == rows[1:3]
        assert await repository.count_dead(conn) == 3


# -- rotation ------------------------------------------------------------------------------


async def slot(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT slot FROM chat_outbox_state"))


async def partition_bytes(pool: asyncpg.Pool, number: int) -> int:
    return int(await pool.fetchval(f"SELECT pg_relation_size('chat_message_outbox_{number}')"))


async def test_rotation_moves_new_rows_on_and_truncates_drained_partitions(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    early = await insert([uuid.uuid4() for _ in range(50)], notify=False)
    async with db_pool.acquire() as conn:
        quiet = await repository.rotate(conn, interval_seconds=3600)
        assert (quiet.rotated, quiet.truncated) == (False, [])  # not due yet
        moved = await repository.rotate(conn, interval_seconds=0)
    assert moved.rotated
    assert await slot(db_pool) == 1
    late = await insert([uuid.uuid4()], notify=False)
    located = await db_pool.fetch(
        "SELECT slot, count(*) AS n FROM chat_message_outbox GROUP BY slot ORDER BY slot"
    )
    assert [(r["slot"], r["n"]) for r in located] == [(0, 50), (1, 1)]
    async with autovacuum_off(db_pool), db_pool.acquire() as conn:  # see autovacuum_off
        held = await repository.rotate(conn, interval_seconds=3600)
        assert held.waiting == [0]  # it still holds rows: never truncated
        await conn.execute("DELETE FROM chat_message_outbox WHERE id = ANY($1)", early)
        assert await partition_bytes(db_pool, 0) > 0  # deleted rows still take room
        emptied = await repository.rotate(conn, interval_seconds=3600)
    assert emptied.truncated == [0]
    assert await partition_bytes(db_pool, 0) == 0
    assert [r["id"] for r in await db_pool.fetch("SELECT id FROM chat_message_outbox")] == late


async def test_the_current_slot_never_moves_onto_a_partition_that_holds_rows(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    [stuck] = await insert([uuid.uuid4()], notify=False)  # in partition 0, never published
    async with db_pool.acquire() as conn:
        for _ in range(2):
            assert (await repository.rotate(conn, interval_seconds=0)).rotated
        assert await slot(db_pool) == 2
        refused = await repository.rotate(conn, interval_seconds=0)
    assert not refused.rotated
    assert 0 in refused.waiting
    assert await slot(db_pool) == 2
    assert [r["id"] for r in await db_pool.fetch("SELECT id FROM chat_message_outbox")] == [stuck]


async def test_a_partition_an_open_transaction_inserted_into_is_not_truncated(
    db_pool: asyncpg.Pool, connections: list[asyncpg.Connection]
) -> None:
    """A writer that chose the old slot and has not committed yet: the partition's exclusive
    lock waits for it (and gives up after the lock timeout), so its row is not lost."""
    writer, conn = connections
    async with Round(writer) as writing:
        await writer.execute(
            "INSERT INTO chat_message_outbox (routing_key, event_type, payload)"
            " VALUES ('k', 'message', '\\x7b7d')"
        )
        assert (await repository.rotate(conn, interval_seconds=0)).rotated  # now slot 1
        later = await repository.rotate(conn, interval_seconds=3600, lock_timeout_ms=50)
        assert later.truncated == []
        await writing.commit()
    async with Round(conn) as round_:
        assert len(await round_.claim()) == 1


async def test_a_retried_row_moves_to_the_current_slot_and_keeps_its_id(
    db_pool: asyncpg.Pool, insert: Insert, connections: list[asyncpg.Connection]
) -> None:
    [row_id] = await insert([uuid.uuid4()], notify=False)
    conn, _ = connections
    assert (await repository.rotate(conn, interval_seconds=0)).rotated
    async with Round(conn) as attempt:
        await attempt.claim()
        assert await repository.retry_later(conn, row_id, retry_count=1, delay_seconds=0, error="x")
        await attempt.commit()
    row = await db_pool.fetchrow("SELECT slot, id FROM chat_message_outbox")
    assert row is not None
    assert (row["slot"], row["id"]) == (1, row_id)


# -- the claim statement against the pure order rule -------------------------------------------

# How a generated row stands at the claim, with its times as offsets from the claim's now()
# (far from zero, so the milliseconds between setting up and claiming never matter). A row
# under another relay's live lease is a row another transaction holds locked: see
# test_a_row_locked_by_another_claimer_holds_back_its_session.
KINDS = {
    "due": ("pending", -60.0, 0),  # (state, next_retry_at, retry_count)
    "backoff": ("pending", 60.0, 1),
    "retry_due": ("pending", -60.0, 1),
    "published": ("published", -60.0, 0),
    "dead": ("dead", -60.0, 3),
}
SESSIONS = [uuid.UUID(int=n + 1) for n in range(3)]

tables = st.lists(
    st.tuples(st.sampled_from([*SESSIONS, None]), st.sampled_from(sorted(KINDS))),
    min_size=1,
    max_size=14,
)


def model_row(row_id: int, session: uuid.UUID | None, kind: str) -> OutboxRow:
    state, next_retry_at, retry_count = KINDS[kind]
    return OutboxRow(
        id=row_id,
        session_id=session,
        status=RowState(state),
        retry_count=retry_count,
        next_retry_at=next_retry_at,
        sent_at=-60.0 if state == "published" else None,
    )


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(table=tables, limit=st.integers(min_value=1, max_value=15))
async def test_the_claim_takes_what_the_order_rule_allows(
    db_pool: asyncpg.Pool, table: list[tuple[uuid.UUID | None, str]], limit: int
) -> None:
    """Any small table (sessions; rows due, in backoff, due again after a failure, published
    (gone), dead (moved out)): one claim, alone, takes exactly the first ``limit`` rows (in
    id order) of what :func:`publishable_in_order` allows at that moment."""
    kinds = [KINDS[kind] for _, kind in table]
    async with db_pool.acquire() as conn:
        await conn.execute("DELETE FROM chat_message_outbox")
        await conn.execute("DELETE FROM chat_message_outbox_dead")
        inserted = await conn.fetch(
            "INSERT INTO chat_message_outbox"
            " (session_id, routing_key, event_type, payload, next_retry_at, retry_count)"
            " SELECT t.session_id, t.n::text, 'message', '\\x7b7d',"
            "  now() + make_interval(secs => t.due), t.retries"
            " FROM unnest($1::uuid[], $2::float8[], $3::int[])"
            "  WITH ORDINALITY AS t(session_id, due, retries, n)"
            " ORDER BY t.n"
            " RETURNING id, routing_key",
            [session for session, _ in table],
            [due for _, due, _ in kinds],
            [retries for _, _, retries in kinds],
        )
        row_ids = {int(r["routing_key"]): r["id"] for r in inserted}
        model = [
            model_row(row_ids[n], session, kind) for n, (session, kind) in enumerate(table, start=1)
        ]
        assert [r.id for r in model] == sorted(r.id for r in model)  # ids follow the table
        gone = [r.id for r in model if r.status is RowState.PUBLISHED]
        await conn.execute("DELETE FROM chat_message_outbox WHERE id = ANY($1)", gone)
        async with conn.transaction():
            for r in model:
                if r.status is RowState.DEAD:
                    await repository.bury(conn, r.id, retry_count=3, error="x")
        expected = [r.id for r in publishable_in_order(model, (), now=0.0)][:limit]
        async with conn.transaction():
            claimed = await repository.claim(conn, limit)
        assert ids(claimed) == expected
