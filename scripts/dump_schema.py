"""Regenerate source/db/sql/postgres/schema.sql from the migrations (see source/db/schema_dump.py).

    python scripts/dump_schema.py [--db-url postgresql://postgres@127.0.0.1:5432/test]

The server needs Supabase's roles (anon, authenticated, service_role): they are created when missing, as the
tests do, so that the security migrations apply and the file shows them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from source.db.schema_dump import SCHEMA_FILE, dump_migrated_schema  # noqa: E402
from tests.pg_fixtures import SUPABASE_ROLES_SQL  # noqa: E402


@click.command()
@click.option("--db-url", default="postgresql://postgres@127.0.0.1:5432/test", show_default=True)
def main(db_url: str) -> None:
    with psycopg.connect(db_url) as conn, conn.transaction():
        conn.execute(SUPABASE_ROLES_SQL)
    SCHEMA_FILE.write_text(dump_migrated_schema(db_url))
    click.echo(f"wrote {SCHEMA_FILE} ({len(SCHEMA_FILE.read_text().splitlines())} lines)")


if __name__ == "__main__":
    main()
