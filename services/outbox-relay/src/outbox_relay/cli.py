"""Operator commands for dead outbox rows.

python -m outbox_relay dead list [--limit N]
python -m outbox_relay dead requeue ID [ID ...]
python -m outbox_relay dead requeue --all

A requeued row goes out when its turn comes, after the later rows of its session that were
already published while it was dead: clients that track ``seq`` had it from history already.
"""

from __future__ import annotations

import argparse
import asyncio

import asyncpg

from . import repository
from .settings import from_env

DEFAULT_LIMIT = 100


async def _list(dsn: str, limit: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await repository.dead_rows(conn, limit)
            total = await repository.count_dead(conn)
    finally:
        await conn.close()
    if not rows:
        print("no dead rows")
    for r in rows:
        error = (r["last_error"] or "").replace("\n", " ")[:120]
        print(
            f"{r['id']}\t{r['session_id']}\t{r['event_type']}\t{r['routing_key']}"
            f"\tretries={r['retry_count']}\t{error}"
        )
    if total > len(rows):
        print(f"{total - len(rows)} more dead row(s) not listed (--limit {limit}; {total} in all)")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


async def _requeue(dsn: str, ids: list[int] | None) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        moved = await repository.requeue(conn, ids)
    finally:
        await conn.close()
    print(f"requeued {len(moved)} row(s)" + (f": {' '.join(map(str, moved))}" if moved else ""))
    not_dead = sorted(set(ids or []) - set(moved))
    if not_dead:
        print(f"not dead (left alone): {' '.join(map(str, not_dead))}")
        return 1
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m outbox_relay", description=__doc__)
    sub = parser.add_subparsers(dest="group", required=True)
    dead = sub.add_parser("dead", help="dead rows").add_subparsers(dest="action", required=True)
    listing = dead.add_parser("list", help="list dead rows, oldest first")
    listing.add_argument(
        "--limit",
        type=_positive,
        default=DEFAULT_LIMIT,
        help=f"list at most this many (default {DEFAULT_LIMIT}); a last line counts the rest",
    )
    requeue = dead.add_parser("requeue", help="send dead rows round again")
    target = requeue.add_mutually_exclusive_group(required=True)
    target.add_argument("ids", nargs="*", type=int, default=[])
    target.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    dsn = from_env().database_url
    if args.action == "list":
        return asyncio.run(_list(dsn, args.limit))
    return asyncio.run(_requeue(dsn, None if args.all else args.ids))
