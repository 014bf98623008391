"""PostgreSQL's own counters around a measured window: transactions committed in the stack's
database (``pg_stat_database.xact_commit``; each backend reports its counts at most once a
second, so a short window is off by up to a second's worth) and transaction ids handed out in
the whole cluster (every transaction that wrote something takes one)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class PgCounters:
    commits: int
    xids: int


READ = (
    "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),"
    " pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
)


async def read(conn: asyncpg.Connection) -> PgCounters:
    row = await conn.fetchrow(READ)
    assert row is not None
    return PgCounters(int(row[0]), int(row[1]))


def per_message(before: PgCounters, after: PgCounters, messages: float) -> dict[str, float | None]:
    if not messages:
        return {"pg_commits_per_msg": None, "pg_write_xacts_per_msg": None}
    return {
        "pg_commits_per_msg": round((after.commits - before.commits) / messages, 3),
        "pg_write_xacts_per_msg": round((after.xids - before.xids) / messages, 3),
    }
