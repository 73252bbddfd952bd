"""A fresh, migrated schema on the local PostgreSQL for one benchmark run (dropped afterwards)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from source.db.postgres import PostgresTaskStore  # noqa: E402
from tests.pg_fixtures import LEGACY_WEBAPP_SCHEMA, terminate_backends, url_with_schema  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
# ours: the table the migrations create; adopted: the older web app's uuid/enum table, migrated in place
SHAPES = ("ours", "adopted")


@contextmanager
def fresh_schema(admin_url: str, shape: str = "ours") -> Iterator[str]:
    schema = f"bench_{uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = url_with_schema(admin_url, schema)
    if shape == "adopted":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(LEGACY_WEBAPP_SCHEMA)
    store = PostgresTaskStore(url)
    store.migrate()
    store.close()
    try:
        yield url
    finally:
        terminate_backends(admin_url, schema)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def insert_pings(url: str, count: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (task_type, params) "
                     "SELECT 'ping', jsonb_build_object('n', g) FROM generate_series(1, %s) AS g", (count,))
