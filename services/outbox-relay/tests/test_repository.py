"""The relay's SQL on the real PostgreSQL: claims, fencing, order, purge, requeue."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbox_relay import repository
from outbox_relay.domain import OutboxRow, RowState, publishable_in_order

from .conftest import Insert


def ids(rows: list[repository.Claimed]) -> list[int]:
    return [r.id for r in rows]


async def test_a_claim_takes_due_rows_in_id_order_under_one_token(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    first, second, third = await insert([uuid.uuid4(), None, uuid.uuid4()], notify=False)
    token = uuid.uuid4()
    async with db_pool.acquire() as conn:
        claimed = await repository.claim(conn, token, 10, 30)
        assert ids(claimed) == [first, second, third]
        assert await repository.claim(conn, uuid.uuid4(), 10, 30) == []  # leases are live
    held = await db_pool.fetch("SELECT status, claim_token FROM chat_message_outbox")
    assert {(r["status"], r["claim_token"]) for r in held} == {("claimed", token)}


async def test_a_stale_claimer_cannot_mark_rows_it_lost(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    await insert([uuid.uuid4()], notify=False)
    stale, fresh = uuid.uuid4(), uuid.uuid4()
    async with db_pool.acquire() as conn:
        [row] = await repository.claim(conn, stale, 10, 0.05)
        await asyncio.sleep(0.1)  # the lease runs out (a GC pause, SIGSTOP...)
        [again] = await repository.claim(conn, fresh, 10, 30)
        assert again.id == row.id
        assert await repository.mark_published(conn, stale, [row.id]) == 0
        assert await repository.release(conn, stale, [row.id]) == 0
        assert not await repository.mark_failed(
            conn, stale, row.id, dead=True, retry_count=9, delay_seconds=0, error="x"
        )
        assert await repository.mark_published(conn, fresh, [row.id]) == 1
    status = await db_pool.fetchval("SELECT status FROM chat_message_outbox")
    assert status == "published"


async def test_a_released_row_is_due_again_without_an_attempt(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    [row_id] = await insert([uuid.uuid4()], notify=False)
    token = uuid.uuid4()
    async with db_pool.acquire() as conn:
        await repository.claim(conn, token, 10, 30)
        assert await repository.release(conn, token, [row_id]) == 1
        [again] = await repository.claim(conn, uuid.uuid4(), 10, 30)
    assert again.id == row_id
    assert again.retry_count == 0


async def test_session_order_holds_across_a_row_in_backoff(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    session = uuid.uuid4()
    first, second = await insert([session, session], notify=False)
    other = await insert([uuid.uuid4()], notify=False)
    token = uuid.uuid4()
    async with db_pool.acquire() as conn:
        claimed = await repository.claim(conn, token, 1, 30)
        assert ids(claimed) == [first]
        await repository.mark_failed(
            conn, token, first, dead=False, retry_count=1, delay_seconds=60, error="nack"
        )
        # the second row waits behind the first; other sessions go on
        assert ids(await repository.claim(conn, uuid.uuid4(), 10, 30)) == other
        # a dead row no longer blocks its session (DEAD_BLOCKS_SESSION is False)
        await conn.execute("UPDATE chat_message_outbox SET status = 'dead' WHERE id = $1", first)
        assert ids(await repository.claim(conn, uuid.uuid4(), 10, 30)) == [second]


async def test_a_row_locked_by_another_claimer_holds_back_its_session(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    """SKIP LOCKED steps over a row another transaction holds; the later rows of that row's
    session must not be taken instead (they would overtake it)."""
    held, other = uuid.uuid4(), uuid.uuid4()
    first, second, third = await insert([held, held, other], notify=False)
    async with db_pool.acquire() as blocker, db_pool.acquire() as conn:
        transaction = blocker.transaction()
        await transaction.start()
        try:
            await blocker.execute(
                "SELECT 1 FROM chat_message_outbox WHERE id = $1 FOR UPDATE", first
            )
            assert ids(await repository.claim(conn, uuid.uuid4(), 10, 30)) == [third]
        finally:
            await transaction.rollback()
        assert ids(await repository.claim(conn, uuid.uuid4(), 10, 30)) == [first, second]


async def test_a_row_beyond_the_batch_limit_is_not_overtaken(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    session = uuid.uuid4()
    rows = await insert([session, session, session], notify=False)
    async with db_pool.acquire() as conn:
        token = uuid.uuid4()
        assert ids(await repository.claim(conn, token, 2, 30)) == rows[:2]
        assert await repository.claim(conn, uuid.uuid4(), 10, 30) == []  # the head is held
        await repository.mark_published(conn, token, rows[:2])
        assert ids(await repository.claim(conn, uuid.uuid4(), 10, 30)) == rows[2:]


async def test_purge_removes_old_published_rows_only_in_bounded_batches(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    rows = await insert([uuid.uuid4() for _ in range(6)], notify=False)
    await db_pool.execute(
        "UPDATE chat_message_outbox SET status = 'published', sent_at = now() - interval '2 hours'"
        " WHERE id = ANY($1::bigint[])",
        rows[:3],
    )
    await db_pool.execute(
        "UPDATE chat_message_outbox SET status = 'published', sent_at = now() WHERE id = $1",
        rows[3],
    )
    await db_pool.execute(
        "UPDATE chat_message_outbox SET status = 'dead', created_at = now() - interval '1 day'"
        " WHERE id = $1",
        rows[4],
    )
    async with db_pool.acquire() as conn:
        assert await repository.purge(conn, 3600, limit=2) == 2
        assert await repository.purge(conn, 3600, limit=2) == 1
        assert await repository.purge(conn, 3600, limit=2) == 0
    left = [r["id"] for r in await db_pool.fetch("SELECT id FROM chat_message_outbox ORDER BY id")]
    assert left == rows[3:]


async def test_backlog_counts_unpublished_rows_and_the_oldest_age(
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
        await conn.execute("UPDATE chat_message_outbox SET status = 'dead' WHERE id = $1", rows[2])
        count, age = await repository.backlog(conn)
    assert count == 2
    assert 89 < age < 120


async def test_requeue_moves_only_dead_rows_and_wakes_the_relays(
    database_url: str, db_pool: asyncpg.Pool, insert: Insert
) -> None:
    dead, alive = await insert([uuid.uuid4(), uuid.uuid4()], notify=False)
    await db_pool.execute(
        "UPDATE chat_message_outbox SET status = 'dead', retry_count = 10, last_error = 'boom',"
        " next_retry_at = now() - interval '1 hour' WHERE id = $1",
        dead,
    )
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
    assert row["status"] == "pending"
    assert row["retry_count"] == 0
    assert row["last_error"] == "boom"  # kept as history


async def test_release_claims_gives_back_only_rows_under_the_given_tokens(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    rows = await insert([uuid.uuid4() for _ in range(3)], notify=False)
    mine, also_mine, theirs = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with db_pool.acquire() as conn:
        for token, row_id in zip((mine, also_mine, theirs), rows, strict=True):
            await conn.execute(
                "UPDATE chat_message_outbox SET status = 'claimed', claim_token = $1,"
                " lease_until = now() + interval '1 min' WHERE id = $2",
                token,
                row_id,
            )
        assert await repository.release_claims(conn, []) == 0
        assert await repository.release_claims(conn, [mine, also_mine, uuid.uuid4()]) == 2
        assert await repository.release_claims(conn, [mine]) == 0  # fenced: nothing left
    after = await db_pool.fetch("SELECT id, status, claim_token FROM chat_message_outbox")
    assert {(r["id"], r["status"], r["claim_token"]) for r in after} == {
        (rows[0], "pending", None),
        (rows[1], "pending", None),
        (rows[2], "claimed", theirs),
    }


async def test_dead_rows_are_listed_in_id_order_up_to_a_limit_and_counted(
    db_pool: asyncpg.Pool, insert: Insert
) -> None:
    rows = await insert([uuid.uuid4() for _ in range(4)], notify=False)
    await db_pool.execute(
        "UPDATE chat_message_outbox SET status = 'dead' WHERE id = ANY($1::bigint[])", rows[1:]
    )
    async with db_pool.acquire() as conn:
        assert [r["id"] for r in await repository.dead_rows(conn, 2)] == rows[1:3]
        assert await repository.count_dead(conn) == 3


# -- the claim statement against the pure order rule -------------------------------------------

# How a generated row stands at the claim, with its times as offsets from the claim's now()
# (far from zero, so the milliseconds between setting up and claiming never matter).
KINDS = {
    "due": ("pending", -60.0, None),  # (status, next_retry_at, lease_until)
    "backoff": ("pending", 60.0, None),
    "held": ("claimed", -60.0, 60.0),  # another relay's live lease
    "expired": ("claimed", -60.0, -60.0),  # its claimer's lease ran out
    "published": ("published", -60.0, None),
    "dead": ("dead", -60.0, None),
}
SESSIONS = [uuid.UUID(int=n + 1) for n in range(3)]

tables = st.lists(
    st.tuples(st.sampled_from([*SESSIONS, None]), st.sampled_from(sorted(KINDS))),
    min_size=1,
    max_size=14,
)


def model_row(row_id: int, session: uuid.UUID | None, kind: str) -> OutboxRow:
    status, next_retry_at, lease_until = KINDS[kind]
    return OutboxRow(
        id=row_id,
        session_id=session,
        status=RowState(status),
        retry_count=0,
        next_retry_at=next_retry_at,
        claim_token="other" if status == "claimed" else None,
        lease_until=lease_until,
        sent_at=-60.0 if status == "published" else None,
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
    """Any small table (sessions, rows due, in backoff, under a live or an expired lease,
    published, dead): one claim, alone, takes exactly the first ``limit`` rows (in id order) of
    what :func:`publishable_in_order` allows at that moment. (Rows another transaction holds
    locked are the one case the model leaves to its ``blocked`` argument: see
    ``test_a_row_locked_by_another_claimer_holds_back_its_session``.)"""
    kinds = [KINDS[kind] for _, kind in table]
    async with db_pool.acquire() as conn:
        await conn.execute("DELETE FROM chat_message_outbox")
        inserted = await conn.fetch(
            "INSERT INTO chat_message_outbox"
            " (session_id, routing_key, event_type, payload, status, next_retry_at,"
            "  claim_token, lease_until, sent_at)"
            " SELECT t.session_id, t.n::text, 'message', '\\x7b7d', t.status,"
            "  now() + make_interval(secs => t.due),"
            "  CASE WHEN t.status = 'claimed' THEN gen_random_uuid() END,"
            "  now() + make_interval(secs => t.lease),"
            "  CASE WHEN t.status = 'published' THEN now() - interval '1 min' END"
            " FROM unnest($1::uuid[], $2::text[], $3::float8[], $4::float8[])"
            "  WITH ORDINALITY AS t(session_id, status, due, lease, n)"
            " ORDER BY t.n"
            " RETURNING id, routing_key",
            [session for session, _ in table],
            [status for status, _, _ in kinds],
            [due for _, due, _ in kinds],
            [lease for _, _, lease in kinds],
        )
        row_ids = {int(r["routing_key"]): r["id"] for r in inserted}
        model = [
            model_row(row_ids[n], session, kind) for n, (session, kind) in enumerate(table, start=1)
        ]
        assert [r.id for r in model] == sorted(r.id for r in model)  # ids follow the table
        expected = [r.id for r in publishable_in_order(model, (), now=0.0)][:limit]
        token = uuid.uuid4()
        claimed = await repository.claim(conn, token, limit, 30)
        assert ids(claimed) == expected
        held = await conn.fetch(
            "SELECT id FROM chat_message_outbox WHERE claim_token = $1 ORDER BY id", token
        )
        assert [r["id"] for r in held] == expected
