"""A PostgreSQL database of a test's own, made empty and dropped after, and what a migration
test does on it: roll one migration back, and read the schema's shape to compare."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
from yoyo import get_backend, read_migrations

from chat_migrations import sql_dir, yoyo_url

# Every column, index, constraint, trigger, sequence and function of the public schema, each as
# one row of text.
_SHAPE = """
SELECT format('column %s.%s %s null=%s default=%s', table_name, column_name, data_type,
              is_nullable, column_default)
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT format('constraint %s %s', c.conname, pg_get_constraintdef(c.oid))
  FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public'
UNION ALL
SELECT format('trigger %s on %s', t.tgname, t.tgrelid::regclass)
  FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid
  JOIN pg_namespace n ON n.oid = r.relnamespace
 WHERE n.nspname = 'public' AND NOT t.tgisinternal
UNION ALL
SELECT format('sequence %s', sequencename) FROM pg_sequences WHERE schemaname = 'public'
UNION ALL
SELECT format('function %s', p.oid::regprocedure)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
"""


@contextlib.contextmanager
def scratch_database(label: str) -> Iterator[str]:
    """The URL of a new database ``chat_test_{label}_{random}`` on DATABASE_URL's server."""
    base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/chat")
    name = f"chat_test_{label}_{uuid.uuid4().hex[:8]}"
    admin = urlunsplit(urlsplit(base)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(base)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def roll_back(url: str, migration_id: str) -> None:
    """Roll back the applied migration ``migration_id`` (and any applied after it)."""
    backend = get_backend(yoyo_url(url))
    try:
        migrations = read_migrations(str(sql_dir()))
        with backend.lock():
            backend.rollback_migrations(
                backend.to_rollback(migrations.filter(lambda m: m.id == migration_id))
            )
    finally:
        backend.connection.close()


def schema_shape(url: str) -> frozenset[str]:
    """The public schema's columns, indexes, constraints, triggers, sequences and functions, one
    line each (but
    the migration tool's own tables)."""
    with psycopg.connect(url) as conn:
        lines = (str(row[0]) for row in conn.execute(_SHAPE).fetchall())
        return frozenset(line for line in lines if "yoyo" not in line)
