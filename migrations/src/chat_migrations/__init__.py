"""Applies the chat backend's versioned SQL migrations (yoyo) to a PostgreSQL database."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from yoyo import get_backend, read_migrations

DEFAULT_SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


def sql_dir() -> Path:
    return Path(os.environ.get("CHAT_MIGRATIONS_DIR", DEFAULT_SQL_DIR))


def yoyo_url(dsn: str) -> str:
    """yoyo names its psycopg 3 backend ``postgresql+psycopg``."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def ensure_database(dsn: str) -> bool:
    """Create the database named in ``dsn`` when it is missing; True when it was created."""
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    if not name:
        raise ValueError("DATABASE_URL names no database")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def apply(dsn: str, directory: Path | None = None) -> list[str]:
    """Apply every pending migration under yoyo's lock; return the ids applied."""
    backend = get_backend(yoyo_url(dsn))
    try:
        migrations = read_migrations(str(directory or sql_dir()))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()
