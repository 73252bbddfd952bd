"""SQLite specifics: migrating a db written by the older headless worker, raw-SQL producers, WAL."""

from __future__ import annotations

import sqlite3
import time

from source.db.models import NewTask, TaskStatus
from source.db.sql_files import list_migrations
from source.db.sqlite import SqliteTaskStore
from tests.helpers import run_worker

OLD_SCHEMA = """
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    task_type TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'Queued',
    dependant_on TEXT NULL,
    output_location TEXT NULL,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT DEFAULT CURRENT_TIMESTAMP,
    generation_started_at TEXT NULL,
    generation_processed_at TEXT NULL,
    project_id TEXT NULL,
    FOREIGN KEY (dependant_on) REFERENCES tasks(id)
)
"""
OLD_ROWS = [
    ("done-1", "generate_video", '{"prompt": "a"}', "Complete", None, "/out/a.mp4", "2024-03-01 10:00:00", "p1"),
    ("fail-1", "travel_segment", '{"x": 1}', "Failed", None, "CUDA out of memory", "2024-03-01 10:01:00", "p1"),
    ("stuck-1", "ping", '{}', "In Progress", None, None, "2024-03-01 10:02:00", None),
    ("queued-1", "ping", '{"message": "old"}', "Queued", None, None, "2024-03-01 10:03:00", "p2"),
    ("queued-2", "ping", '{}', "Queued", "queued-1", None, "2024-03-01 10:04:00", "p2"),
]


def build_old_db(path):
    conn = sqlite3.connect(path)
    conn.execute(OLD_SCHEMA)
    conn.executemany(
        "INSERT INTO tasks (id, task_type, params, status, dependant_on, output_location, created_at, project_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        OLD_ROWS,
    )
    conn.commit()
    conn.close()


def test_old_headless_db_is_migrated_in_place_keeping_every_row(tmp_path):
    db = tmp_path / "tasks.db"
    build_old_db(db)
    store = SqliteTaskStore(db)
    applied = store.migrate()
    assert applied == [f"{m.version:03d}_{m.name}" for m in list_migrations("sqlite")]
    assert applied[:3] == ["001_tasks_legacy_shape", "002_reliability_columns", "003_workers"]
    assert store.migrate() == []
    rows = {t.id: t for t in store.list_tasks(limit=100)}
    assert set(rows) == {r[0] for r in OLD_ROWS}
    assert rows["done-1"].output_location == "/out/a.mp4"
    assert rows["done-1"].params() == {"prompt": "a"}
    assert rows["fail-1"].error_message == "CUDA out of memory"  # old workers wrote errors here
    assert rows["queued-1"].created_at == "2024-03-01T10:03:00.000Z"
    assert rows["queued-2"].dependant_on == "queued-1"
    assert (rows["queued-1"].attempts, rows["queued-1"].max_attempts, rows["queued-1"].priority) == (0, 3, 0)
    assert store.schema_version() == list_migrations("sqlite")[-1].version


def test_migrated_old_db_runs_under_the_new_worker(tmp_path):
    db = tmp_path / "tasks.db"
    build_old_db(db)
    result = run_worker(db, tmp_path / "out", "--once", "--lease-seconds", "1")
    assert result.returncode == 0, result.stderr
    store = SqliteTaskStore(db)
    statuses = {t.id: t.status for t in store.list_tasks()}
    # the row the old worker left In Progress forever has no lease: it is reclaimed and run
    assert statuses["stuck-1"] is TaskStatus.COMPLETE
    assert statuses["queued-1"] is TaskStatus.COMPLETE
    assert statuses["queued-2"] is TaskStatus.COMPLETE


def test_migrate_only_applies_migrations_and_exits(tmp_path):
    db = tmp_path / "fresh.db"
    result = run_worker(db, tmp_path / "out", "--migrate-only")
    assert result.returncode == 0, result.stderr
    assert "001_tasks_legacy_shape" in result.stdout
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    assert {"lease_expires_at", "attempts", "max_attempts", "priority", "error_message", "result", "progress",
            "heartbeat_at", "worker_id"} <= columns
    again = run_worker(db, tmp_path / "out", "--migrate-only")
    assert "none (schema up to date)" in again.stdout


def test_row_inserted_with_plain_sql_gets_an_id_and_timestamps(sqlite_store):
    conn = sqlite3.connect(sqlite_store.path)
    conn.execute("INSERT INTO tasks (task_type, params) VALUES ('ping', '{}')")
    conn.commit()
    task = sqlite_store.claim_next_task("w", lease_seconds=10)
    assert task is not None and len(task.id) == 36 and task.id[14] == "4"
    assert task.created_at.endswith("Z")


def test_dependency_that_never_appears_fails_after_a_grace_minute(sqlite_store):
    orphan = sqlite_store.add_task(NewTask("ping", {}, dependant_on="no-such-task"))
    assert sqlite_store.fail_orphaned_dependants() == []  # the parent may still be on its way
    conn = sqlite3.connect(sqlite_store.path)
    old = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 120))
    conn.execute("UPDATE tasks SET created_at = ? WHERE id = ?", (old, orphan))
    conn.commit()
    assert [f.task_id for f in sqlite_store.fail_orphaned_dependants()] == [orphan]
    assert sqlite_store.get_task(orphan).error_message == "dependency no-such-task does not exist"
