"""schema.sql is the schema the migrations produce from empty: a change to a migration without regenerating
the file (``python scripts/dump_schema.py``) fails here, so the file can be read instead of 30 migrations."""

from __future__ import annotations

import difflib

import pytest

from source.db.schema_dump import SCHEMA_FILE, dump_migrated_schema, normalise, pg_dump_binary
from tests.pg_fixtures import supabase_roles  # noqa: F401  (fixture)


@pytest.mark.skipif(pg_dump_binary() is None, reason="pg_dump is not installed (Debian: postgresql-client)")
def test_migrations_from_empty_produce_exactly_schema_sql(supabase_roles):  # noqa: F811
    produced = dump_migrated_schema(supabase_roles)
    committed = SCHEMA_FILE.read_text()
    if produced != committed:
        diff = "".join(list(difflib.unified_diff(committed.splitlines(True), produced.splitlines(True),
                                                 "schema.sql (committed)", "migrations from empty"))[:80])
        pytest.fail("source/db/sql/postgres/schema.sql is not what the migrations produce; run "
                    f"`python scripts/dump_schema.py` and commit it:\n{diff}")


def test_normalise_removes_what_differs_between_servers_and_names_no_schema():
    dump = ("-- Dumped from database version 15.19\n\\restrict AbC123\nSET statement_timeout = 0;\n"
            "SELECT pg_catalog.set_config('search_path', '', false);\n\n\n\n"
            'CREATE TABLE t_ab12.tasks (id text);\nCREATE FUNCTION "t_ab12".f() RETURNS int;\n\\unrestrict AbC123\n')
    text = normalise(dump, "t_ab12")
    body = text.split("\n", 3)[3]
    assert body == "\nCREATE TABLE tasks_schema.tasks (id text);\nCREATE FUNCTION tasks_schema.f() RETURNS int;\n"
