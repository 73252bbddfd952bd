"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from source.db.sqlite import SqliteTaskStore
from source.logging_utils import configure_logging
from tests.pg_fixtures import (  # noqa: F401  (fixtures)
    fake_supabase,
    legacy_schema_url,
    postgres_adopted_store,
    postgres_schema_url,
    postgres_store,
    postgres_url,
    supabase_api_store,
)

configure_logging("console")

# postgres_adopted: the older web app's uuid/enum tasks table after --migrate-only (tests/pg_fixtures.py)
STORE_BACKENDS = ["sqlite", "postgres", "postgres_adopted", "supabase_api"]


def _open_sqlite(tmp_path: Path) -> SqliteTaskStore:
    store = SqliteTaskStore(tmp_path / "tasks.db")
    store.migrate()
    return store


@pytest.fixture
def sqlite_store(tmp_path: Path):
    store = _open_sqlite(tmp_path)
    yield store
    store.close()


@pytest.fixture(params=STORE_BACKENDS)
def store(request, tmp_path: Path):
    """The same behaviour, every backend: tests using this fixture are the store contract."""
    if request.param == "sqlite":
        opened = _open_sqlite(tmp_path)
    else:  # other backends register themselves in STORE_BACKENDS with a fixture named <backend>_store
        opened = request.getfixturevalue(f"{request.param}_store")
    yield opened
    opened.close()
