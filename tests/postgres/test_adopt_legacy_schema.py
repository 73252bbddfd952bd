"""A Supabase project whose web app made the tasks table (uuid ids, a task_status enum, jsonb params): one
``--migrate-only`` adopts it in place, then a worker started with ``--db-type supabase`` and SUPABASE_DB_URL
claims and completes the rows the web app inserts the way it always has. Workers and read-only commands
never change a schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from source.db.config import EXIT_NO_TASKS_TABLE, EXIT_SCHEMA_OUTDATED
from source.db.models import TaskStatus
from source.db.rpc_store import expected_schema_version
from source.db.sql_files import list_migrations
from tests.helpers import REPO_ROOT, ping_executions, run_worker, run_workers_once
from tests.pg_fixtures import schema_of

pytestmark = pytest.mark.postgres

ORIGINAL_COLUMNS = ("id, task_type, params, status::text AS status, dependant_on, output_location, created_at, "
                    "updated_at, generation_started_at, generation_processed_at, project_id, worker_id, claimed_at")


def _supabase_worker(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """The user's card: `python worker.py --db-type supabase` with the direct URL in the environment only."""
    return run_worker(tmp_path / "unused.db", tmp_path / "out", "--db-type", "supabase", *extra,
                      env={"SUPABASE_DB_URL": url}, timeout=120)


def _tasks_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "source.cli.tasks", args[0], "--db-url", url, *args[1:]],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def _schema_snapshot(url: str) -> list[tuple]:
    """Every relation, column (with its type), function, type and enum label in the test's schema."""
    schema = schema_of(url)
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("""
            SELECT 'rel', c.relname, c.relkind::text FROM pg_class AS c WHERE c.relnamespace = %(s)s::regnamespace
            UNION ALL
            SELECT 'col', c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
            WHERE c.relnamespace = %(s)s::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
            UNION ALL
            SELECT 'fn', p.proname, pg_get_function_identity_arguments(p.oid) FROM pg_proc AS p
            WHERE p.pronamespace = %(s)s::regnamespace
            UNION ALL
            SELECT 'type', t.typname, t.typtype::text FROM pg_type AS t WHERE t.typnamespace = %(s)s::regnamespace
            UNION ALL
            SELECT 'label', e.enumlabel, t.typname FROM pg_enum AS e JOIN pg_type AS t ON t.oid = e.enumtypid
            WHERE t.typnamespace = %(s)s::regnamespace
            ORDER BY 1, 2, 3""", {"s": schema}).fetchall()


def _web_app_rows(url: str) -> dict[str, str]:
    """Rows as the web app inserts them, before and after the migration: only task_type, params, status,
    project_id and maybe dependant_on; the ids come from the column default."""
    with psycopg.connect(url, autocommit=True) as conn:
        project = conn.execute("INSERT INTO projects (user_id) VALUES (gen_random_uuid()) RETURNING id").fetchone()[0]
        first = conn.execute("INSERT INTO tasks (task_type, params, status, project_id) "
                             "VALUES ('ping', '{\"message\": \"first\"}', 'Queued', %s) RETURNING id",
                             (project,)).fetchone()[0]
        second = conn.execute("INSERT INTO tasks (task_type, params, status, project_id, dependant_on) "
                              "VALUES ('ping', '{\"message\": \"second\"}', 'Queued', %s, %s) RETURNING id",
                              (project, first)).fetchone()[0]
    return {"first": str(first), "second": str(second), "project": str(project)}


def test_one_migrate_only_adopts_the_web_apps_table_and_a_supabase_worker_completes_its_rows(legacy_schema_url,
                                                                                              tmp_path):
    url = legacy_schema_url
    before = _web_app_rows(url)
    with psycopg.connect(url, autocommit=True) as conn:
        # history the older worker left: a failure whose text it wrote into output_location
        failed = conn.execute("INSERT INTO tasks (task_type, params, status, output_location) "
                              "VALUES ('t2v', '{}', 'Failed', 'CUDA out of memory') RETURNING id").fetchone()[0]
        original = conn.execute(f"SELECT {ORIGINAL_COLUMNS} FROM tasks ORDER BY id").fetchall()

    migrated = _supabase_worker(url, tmp_path, "--migrate-only")
    assert migrated.returncode == 0, migrated.stderr
    assert "000_adopt_existing_tasks" in migrated.stdout and "005_task_functions" in migrated.stdout

    with psycopg.connect(url, autocommit=True) as conn:
        types = dict(conn.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                                  "WHERE attrelid = 'tasks'::regclass AND attnum > 0").fetchall())
        labels = [r[0] for r in conn.execute("SELECT unnest(enum_range(NULL::task_status))::text")]
        # nothing of the user's columns or rows was rewritten; the old error text is also where we read errors
        assert conn.execute(f"SELECT {ORIGINAL_COLUMNS} FROM tasks ORDER BY id").fetchall() == original
        assert conn.execute("SELECT error_message FROM tasks WHERE id = %s", (failed,)).fetchone()[0] == \
            "CUDA out of memory"
    assert (types["id"], types["status"], types["project_id"], types["dependant_on"], types["params"]) == \
        ("uuid", "task_status", "uuid", "uuid", "jsonb")
    assert labels == ["Queued", "In Progress", "Complete", "Failed", "Cancelled"]

    after = _web_app_rows(url)  # the web app keeps inserting the way it always has
    result = _supabase_worker(url, tmp_path, "--once", "--worker", "gpu-box-1")
    assert result.returncode == 0, result.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        rows = {str(r[0]): r[1:] for r in conn.execute(
            "SELECT id, status::text, worker_id, output_location, generation_started_at FROM tasks "
            "WHERE task_type = 'ping'")}
    for task_id in (before["first"], before["second"], after["first"], after["second"]):
        status, worker, output, _ = rows[task_id]
        assert (status, worker) == ("Complete", "gpu-box-1")
        assert output.endswith(f"out/{task_id}_ping.json")
        assert ping_executions(tmp_path / "out", task_id)
    # dependant_on (uuid) is honoured: the second row started after the first
    for batch in (before, after):
        assert rows[batch["first"]][3] < rows[batch["second"]][3]

    again = _supabase_worker(url, tmp_path, "--migrate-only")
    assert "none (schema up to date)" in again.stdout


def test_adopted_table_refuses_a_bad_uuid_from_a_producer_with_a_clear_error(legacy_schema_url, tmp_path):
    assert _supabase_worker(legacy_schema_url, tmp_path, "--migrate-only").returncode == 0
    result = _tasks_cli(legacy_schema_url, "add", "ping", "{}", "--id", "not-a-uuid")
    assert result.returncode != 0
    assert 'invalid input syntax for type uuid: "not-a-uuid"' in result.stderr


@pytest.mark.parametrize("command", [("list",), ("stats",), ("workers",), ("show", "0b6c0c5e-3c1b-4a59-9d1d-2c1f1f1f1f1f")])
def test_read_only_commands_on_an_unmigrated_web_app_table_change_nothing_and_say_how_to_migrate(
        legacy_schema_url, command):
    before = _schema_snapshot(legacy_schema_url)
    result = _tasks_cli(legacy_schema_url, *command)
    assert result.returncode == EXIT_SCHEMA_OUTDATED, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"is at version 0, this code needs version {expected_schema_version()}" in lines[0]
    assert "python worker.py --db-type supabase --migrate-only" in lines[0]
    assert _schema_snapshot(legacy_schema_url) == before


def test_worker_on_a_database_without_a_tasks_table_creates_nothing_and_exits_5(postgres_schema_url, tmp_path):
    assert _schema_snapshot(postgres_schema_url) == []
    worker = _supabase_worker(postgres_schema_url, tmp_path, "--once")
    assert worker.returncode == EXIT_NO_TASKS_TABLE == 5
    assert "there is no tasks table at 127.0.0.1:5432/test (schema " in worker.stderr
    listing = _tasks_cli(postgres_schema_url, "list")
    assert listing.returncode == EXIT_NO_TASKS_TABLE
    assert _schema_snapshot(postgres_schema_url) == []


def test_worker_on_a_schema_behind_the_code_names_both_versions_and_changes_nothing(postgres_store,
                                                                                      postgres_schema_url, tmp_path):
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:  # as if only 000-005 were applied
        conn.execute("DELETE FROM schema_migrations WHERE version > 5")
        conn.execute("CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer LANGUAGE sql AS 'SELECT 5'")
    before = _schema_snapshot(postgres_schema_url)
    worker = _supabase_worker(postgres_schema_url, tmp_path, "--once")
    assert worker.returncode == EXIT_SCHEMA_OUTDATED == 4
    assert f"is at version 5, this code needs version {expected_schema_version()}; migrate it with: " \
           "python worker.py --db-type supabase --migrate-only" in worker.stderr
    assert _schema_snapshot(postgres_schema_url) == before


def test_migrations_applied_by_hand_without_schema_migrations_are_recognised(legacy_schema_url, tmp_path):
    """`supabase db push` or the SQL editor, one file at a time: no schema_migrations rows, the functions'
    own version number counts."""
    with psycopg.connect(legacy_schema_url, autocommit=True) as conn:
        for migration in list_migrations("postgres"):
            with conn.transaction():
                conn.execute(migration.sql)
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None
        conn.execute("INSERT INTO tasks (task_type, params) VALUES ('ping', '{}')")
    worker = _supabase_worker(legacy_schema_url, tmp_path, "--once")
    assert worker.returncode == 0, worker.stderr
    assert json.loads(_tasks_cli(legacy_schema_url, "stats", "--json").stdout)["by_status"] == {"Complete": 1}


def test_dry_run_prints_the_sql_and_applies_nothing_then_tasks_migrate_applies_it(legacy_schema_url, tmp_path):
    before = _schema_snapshot(legacy_schema_url)
    dry = _supabase_worker(legacy_schema_url, tmp_path, "--migrate-only", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "-- migration 000_adopt_existing_tasks" in dry.stdout
    assert "CREATE OR REPLACE FUNCTION claim_next_task(" in dry.stdout
    assert dry.stdout.rstrip().splitlines()[-1].startswith("-- dry run, nothing applied; pending: 000_adopt")
    assert _schema_snapshot(legacy_schema_url) == before

    applied = _tasks_cli(legacy_schema_url, "migrate")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.startswith("migrations applied: 000_adopt_existing_tasks, 001_tasks_legacy_shape")
    assert _tasks_cli(legacy_schema_url, "migrate", "--dry-run").stdout.strip() == \
        "-- dry run, nothing applied; pending: none (schema up to date)"
    assert _tasks_cli(legacy_schema_url, "list").returncode == 0


def test_json_params_and_timestamps_without_time_zone_are_adopted_too(postgres_schema_url, tmp_path):
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
        conn.execute("""
            CREATE TYPE task_status AS ENUM ('Queued', 'In Progress', 'Complete', 'Failed');
            CREATE TABLE tasks (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), task_type text NOT NULL,
                params json NOT NULL, status task_status NOT NULL DEFAULT 'Queued', dependant_on uuid,
                output_location text, created_at timestamp NOT NULL DEFAULT now(), updated_at timestamp DEFAULT now(),
                generation_started_at timestamp, generation_processed_at timestamp, project_id uuid)""")
        conn.execute("INSERT INTO tasks (task_type, params) VALUES ('ping', '{\"message\": \"json\"}')")
    assert _supabase_worker(postgres_schema_url, tmp_path, "--migrate-only").returncode == 0
    result = _supabase_worker(postgres_schema_url, tmp_path, "--once")
    assert result.returncode == 0, result.stderr
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
        row = conn.execute("SELECT status::text, pg_typeof(params)::text, result IS NOT NULL FROM tasks").fetchone()
    assert row == ("Complete", "json", True)


def test_three_workers_share_the_adopted_table_and_run_each_row_exactly_once(postgres_adopted_store,
                                                                             legacy_schema_url, tmp_path):
    with psycopg.connect(legacy_schema_url, autocommit=True) as conn:
        ids = [str(r[0]) for r in conn.execute(
            "INSERT INTO tasks (task_type, params, status) SELECT 'ping', jsonb_build_object('n', g), 'Queued' "
            "FROM generate_series(1, 200) AS g RETURNING id")]
    run_workers_once(legacy_schema_url, tmp_path / "out", 3, "adopted-")
    rows = {t.id: t for t in postgres_adopted_store.list_tasks(limit=500)}
    assert set(rows) == set(ids) and {r.status for r in rows.values()} == {TaskStatus.COMPLETE}
    assert all(len(ping_executions(tmp_path / "out", task_id)) == 1 for task_id in ids)
    assert all(rows[i].attempts == 1 for i in ids)


def test_a_failing_migration_is_one_line_and_leaves_the_earlier_ones_applied(postgres_schema_url, tmp_path):
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:  # a table in our way, of another kind
        conn.execute("CREATE VIEW workers AS SELECT 1 AS id")
    result = _supabase_worker(postgres_schema_url, tmp_path, "--migrate-only")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("Error: migration 003_workers failed and was rolled back (42703: column \"host\" ")
    assert lines[0].endswith("applied before it in this run: 000_adopt_existing_tasks, 001_tasks_legacy_shape, "
                             "002_reliability_columns")
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")] == [0, 1, 2]
