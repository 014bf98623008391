"""Operator commands for dead outbox rows.

python -m outbox_relay dead list
python -m outbox_relay dead requeue ID [ID ...]
python -m outbox_relay dead requeue --all
"""

from __future__ import annotations

import argparse
import asyncio

import asyncpg

from . import repository
from .settings import from_env


async def _list(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await repository.dead_rows(conn)
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
    return 0


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
    dead.add_parser("list", help="list dead rows")
    requeue = dead.add_parser("requeue", help="send dead rows round again")
    target = requeue.add_mutually_exclusive_group(required=True)
    target.add_argument("ids", nargs="*", type=int, default=[])
    target.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    dsn = from_env().database_url
    if args.action == "list":
        return asyncio.run(_list(dsn))
    return asyncio.run(_requeue(dsn, None if args.all else args.ids))
