"""``python -m chat_migrations [--create-db]``: bring DATABASE_URL's schema up to date."""

from __future__ import annotations

import argparse
import os
import sys

from . import apply, ensure_database


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chat-migrate", description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument(
        "--create-db", action="store_true", help="create the database first when it is missing"
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("set DATABASE_URL or pass --database-url")
    if args.create_db and ensure_database(args.database_url):
        print("created the database", file=sys.stderr)
    applied = apply(args.database_url)
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
