"""Every SQL migration on a database of its own: applied in order, each rolled back, newest
first (each rollback changes the schema, and leaves it as it was before that migration), then
all applied again to the same schema. What a rollback does to the rows is tested next to the
migrations that change rows (message-svc's test_encrypted_migration)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat_migrations import apply, sql_dir
from chat_testing.scratch import roll_back, schema_shape, scratch_database

pytestmark = pytest.mark.integration

MIGRATIONS = sorted(
    path.name.removesuffix(".sql")
    for path in sql_dir().glob("*.sql")
    if not path.name.endswith(".rollback.sql")
)


@pytest.fixture
def scratch_url() -> Iterator[str]:
    with scratch_database("migrations") as url:
        yield url


def test_the_migrations_are_numbered_in_order_with_a_rollback_each() -> None:
    assert [m.split(".")[0] for m in MIGRATIONS] == [
        f"{n:04d}" for n in range(1, len(MIGRATIONS) + 1)
    ]
    for migration in MIGRATIONS:
        assert (sql_dir() / f"{migration}.rollback.sql").is_file(), migration


def test_each_rolls_back_to_the_schema_before_it_and_all_apply_again(
    scratch_url: str, tmp_path: Path
) -> None:
    before: dict[str, frozenset[str]] = {}
    for migration in MIGRATIONS:  # one at a time: the folder holds those up to this one
        for name in (f"{migration}.sql", f"{migration}.rollback.sql"):
            shutil.copy(sql_dir() / name, tmp_path / name)
        before[migration] = schema_shape(scratch_url)
        assert apply(scratch_url, tmp_path) == [migration]
    full = schema_shape(scratch_url)
    for migration in reversed(MIGRATIONS):
        shape = schema_shape(scratch_url)
        roll_back(scratch_url, migration)
        rolled = schema_shape(scratch_url)
        assert rolled != shape, f"rolling back {migration} changed nothing in the schema"
        assert rolled == before[migration], (migration, sorted(rolled ^ before[migration]))
    assert apply(scratch_url) == MIGRATIONS
    assert schema_shape(scratch_url) == full
