"""The claim reads no row it may not take (benchmarks/claim_flat.py measures it): 5,000 rows in retry back-off and
5,000 blocked on an unfinished dependency, all older than the one ready row, are neither read by Postgres's claim
(no row removed by filter in its plan) nor stepped over by SQLite's (the same work as on an empty queue)."""

from __future__ import annotations

import psycopg
import pytest

from source.db.models import NewTask

UNREADY = 5000


@pytest.mark.postgres
def test_postgres_claim_reads_none_of_the_rows_in_back_off_or_blocked(postgres_store, postgres_schema_url):
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (id, task_type, params, run_after, created_at) SELECT 'b' || g, 'ping', "
                     "'{}'::jsonb, now() + interval '1 day', now() - interval '1 hour' FROM generate_series(1, %s) g",
                     (UNREADY,))
        conn.execute("INSERT INTO tasks (id, task_type, params, dependant_on, created_at) SELECT 'd' || g, 'ping', "
                     "'{}'::jsonb, 'unfinished', now() - interval '1 hour' FROM generate_series(1, %s) g", (UNREADY,))
        conn.execute("INSERT INTO tasks (id, task_type, params, run_after, created_at) VALUES "
                     "('due', 'ping', '{}', now() - interval '1 second', now() - interval '2 hours')")
        conn.execute("INSERT INTO tasks (id, task_type, params) VALUES ('ready', 'ping', '{}')")
        conn.execute("ANALYZE tasks")
        lines: list[str] = []
        conn.add_notice_handler(lambda notice: lines.append(notice.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        for setting in ("auto_explain.log_min_duration = 0", "auto_explain.log_nested_statements = on",
                        "auto_explain.log_analyze = on", "client_min_messages = log"):
            conn.execute(f"SET {setting}")
        claimed = [(conn.execute("SELECT id FROM claim_next_task('w', 600)").fetchone() or [None])[0]
                   for _ in range(3)]
    plan = "\n".join(lines)
    assert claimed[:2] == ["due", "ready"] and claimed[2] is None  # the due row first: it is the oldest
    assert "Index Scan using tasks_ready_idx" in plan, plan
    assert "Rows Removed by Filter" not in plan and "Seq Scan on tasks" not in plan, plan


def _claim_steps(store) -> int:
    """SQLite virtual-machine steps of one claim (and its release of due rows), counted by a progress handler."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn = store._conn()
    conn.set_progress_handler(count, 1)
    try:
        task = store.claim_next_task("w", lease_seconds=600)
    finally:
        conn.set_progress_handler(None, 1)
    assert task is not None and task.id == "ready"
    store.requeue_task(task.id, "w")
    return steps


def test_sqlite_claim_steps_over_none_of_the_rows_in_back_off_or_blocked(sqlite_store):
    sqlite_store.add_task(NewTask("ping", {}, id="ready"))
    empty = _claim_steps(sqlite_store)
    conn = sqlite_store._conn()
    conn.execute("WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?) "
                 "INSERT INTO tasks (id, task_type, params, status, run_after, created_at, updated_at) "
                 "SELECT 'b' || n, 'ping', '{}', 'Queued', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+1 day'), "
                 "'2000-01-01T00:00:00.000Z', '2000-01-01T00:00:00.000Z' FROM g", (UNREADY,))
    conn.execute("WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?) "
                 "INSERT INTO tasks (id, task_type, params, status, dependant_on, created_at, updated_at) "
                 "SELECT 'd' || n, 'ping', '{}', 'Queued', 'unfinished', '2000-01-01T00:00:00.000Z', "
                 "'2000-01-01T00:00:00.000Z' FROM g", (UNREADY,))
    assert sqlite_store.has_claimable_task()
    full = _claim_steps(sqlite_store)
    assert full <= 1.5 * empty, (full, empty)  # before: every unready row probed (about 100x here)
