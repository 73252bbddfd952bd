"""Real worker.py processes on one Postgres schema: exactly-once claims at scale, crashes, lost connections,
LISTEN wake-up, migrations and the task CLI over --db-url."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime

import psycopg
import pytest

from source.db.models import NewTask, TaskStatus
from tests.helpers import (
    REPO_ROOT,
    log_events,
    ping_executions,
    run_worker,
    run_workers_once,
    start_worker,
    wait_for,
)
from tests.pg_fixtures import schema_of, terminate_backends

pytestmark = pytest.mark.postgres


def _insert_pings(url: str, count: int, **params: object) -> list[str]:
    """A producer's bulk insert in plain SQL (ids and timestamps from the column defaults)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO tasks (task_type, params) SELECT 'ping', jsonb_build_object('n', g) || %s::jsonb "
            "FROM generate_series(1, %s) AS g RETURNING id", (psycopg.types.json.Jsonb(params), count)).fetchall()
    return [row[0] for row in rows]


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_eight_worker_processes_complete_two_thousand_rows_exactly_once(postgres_store, postgres_schema_url, tmp_path):
    out = tmp_path / "out"
    ids = _insert_pings(postgres_schema_url, 2000)
    run_workers_once(postgres_schema_url, out, 8, "pg", timeout=240)
    rows = {t.id: t for t in postgres_store.list_tasks(limit=5000)}
    assert {row.status for row in rows.values()} == {TaskStatus.COMPLETE}
    assert set(rows) == set(ids)
    executions = {task_id: ping_executions(out, task_id) for task_id in ids}
    assert all(len(runs) == 1 for runs in executions.values()), [k for k, v in executions.items() if len(v) != 1]
    assert all(rows[i].attempts == 1 and rows[i].worker_id == executions[i][0]["worker_id"] for i in ids)
    per_worker = Counter(row.worker_id for row in rows.values())
    assert len(per_worker) >= 4, per_worker  # the work was shared
    assert postgres_store.stats().by_status == {"Complete": 2000}


def test_killed_workers_rows_are_reclaimed_completed_and_the_zombie_is_refused(postgres_store, postgres_schema_url,
                                                                               tmp_path):
    out = tmp_path / "out"
    doomed_rows = [postgres_store.add_task(NewTask("ping", {"sleep_seconds": 2.0, "message": str(i)}))
                   for i in range(2)]
    doomed = [start_worker(postgres_schema_url, out, "--worker", f"doomed-{i}", "--lease-seconds", "1.5")
              for i in range(2)]
    try:
        wait_for(lambda: all(postgres_store.get_task(t).status is TaskStatus.IN_PROGRESS for t in doomed_rows),
                 timeout=30)
        owners = {postgres_store.get_task(t).worker_id for t in doomed_rows}
        assert owners == {"doomed-0", "doomed-1"}
        for proc in doomed:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    finally:
        _stop(doomed)
    rescuer = run_worker(postgres_schema_url, out, "--worker", "rescuer", "--max-tasks", "2",
                         "--lease-seconds", "1.5", timeout=60)
    assert rescuer.returncode == 0, rescuer.stderr
    for task_id in doomed_rows:
        row = postgres_store.get_task(task_id)
        assert (row.status, row.attempts, row.worker_id) == (TaskStatus.COMPLETE, 2, "rescuer")
        assert ping_executions(out, task_id)[0]["worker_id"] == "rescuer"
    assert sum(e["event"] == "lease_reclaimed" for e in log_events(rescuer.stderr)) == 2
    # a doomed worker that comes back late cannot overwrite the rescuer's result
    zombie_row = postgres_store.get_task(doomed_rows[0])
    assert not postgres_store.complete_task(doomed_rows[0], "doomed-0", output_location="/stale", result=None)
    assert not postgres_store.heartbeat(doomed_rows[0], "doomed-0", lease_seconds=60)
    assert postgres_store.get_task(doomed_rows[0]).output_location == zombie_row.output_location


def test_workers_reconnect_after_their_backends_are_terminated(postgres_store, postgres_url, postgres_schema_url,
                                                               tmp_path):
    out = tmp_path / "out"
    ids = _insert_pings(postgres_schema_url, 300, sleep_seconds=0.01)
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    # a short lease: a claim whose reply was lost with its connection is reclaimed quickly
    workers = [start_worker(postgres_schema_url, out, "--once", "--worker", f"rc{i}", "--lease-seconds", "2",
                            log_path=logs[i]) for i in range(3)]
    try:
        terminated = 0
        for _ in range(3):
            wait_for(lambda: postgres_store.stats().by_status.get("Complete", 0) > 0, timeout=60)
            time.sleep(0.4)
            terminated += terminate_backends(postgres_url, schema_of(postgres_schema_url))
        assert terminated >= 3
        for proc in workers:
            assert proc.wait(timeout=120) == 0
    finally:
        _stop(workers)
    # rows claimed over a connection that died before the reply are reclaimed when their lease ends
    if postgres_store.stats().by_status != {"Complete": 300}:
        leftover = run_worker(postgres_schema_url, out, "--once", "--worker", "sweeper", "--lease-seconds", "2")
        assert leftover.returncode == 0, leftover.stderr
    assert postgres_store.stats().by_status == {"Complete": 300}
    assert all(ping_executions(out, task_id) for task_id in ids)
    events = [e["event"] for log in logs for e in log_events(log.read_text())]
    assert "postgres_unavailable" in events or "listen_connection_lost" in events


def test_idle_worker_is_woken_by_notify_well_before_the_poll_interval(postgres_store, postgres_schema_url, tmp_path):
    out = tmp_path / "out"
    proc = start_worker(postgres_schema_url, out, "--max-tasks", "5", "--poll-interval", "30")
    try:
        wait_for(lambda: postgres_store.list_workers(alive_within_seconds=30), timeout=30)
        time.sleep(0.5)  # idle, listening
        latencies = []
        for _ in range(5):
            task_id = postgres_store.add_task(NewTask("ping", {}))
            wait_for(lambda tid=task_id: postgres_store.get_task(tid).status is TaskStatus.COMPLETE, timeout=10)
            row = postgres_store.get_task(task_id)
            latencies.append((_time(row.generation_started_at) - _time(row.created_at)).total_seconds())
            time.sleep(0.2)
        assert proc.wait(timeout=10) == 0
    finally:
        _stop([proc])
    assert max(latencies) < 1.0, latencies  # the fallback poll is 30 s away


def test_dependency_chain_and_cascade_across_worker_processes(postgres_store, postgres_schema_url, tmp_path):
    out = tmp_path / "out"
    first = postgres_store.add_task(NewTask("ping", {"message": "1"}))
    second = postgres_store.add_task(NewTask("ping", {"message": "2"}, dependant_on=first, priority=5))
    third = postgres_store.add_task(NewTask("ping", {"message": "3"}, dependant_on=second, priority=9))
    bad_head = postgres_store.add_task(NewTask("ping", {"sleep_seconds": -1}))
    bad_child = postgres_store.add_task(NewTask("ping", {}, dependant_on=bad_head))
    run_workers_once(postgres_schema_url, out, 2, "d", timeout=60)
    started = [postgres_store.get_task(i).generation_started_at for i in (first, second, third)]
    assert started == sorted(started)
    assert all(postgres_store.get_task(i).status is TaskStatus.COMPLETE for i in (first, second, third))
    child = postgres_store.get_task(bad_child)
    assert child.status is TaskStatus.FAILED and child.error_message.startswith(f"dependency {bad_head} ended Failed")


def test_migrate_only_over_a_direct_url_then_the_task_cli(postgres_schema_url, tmp_path):
    first = run_worker(postgres_schema_url, tmp_path / "out", "--migrate-only")
    assert first.returncode == 0, first.stderr
    assert "005_task_functions" in first.stdout
    again = run_worker(postgres_schema_url, tmp_path / "out", "--migrate-only")
    assert "none (schema up to date)" in again.stdout

    def tasks(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "source.cli.tasks", *args[:1], "--db-url", postgres_schema_url,
                                 *args[1:]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result

    task_id = tasks("add", "ping", '{"message": "cli"}', "--priority", "4", "--project-id", "p1").stdout.strip()
    assert '"priority": 4' in tasks("show", task_id).stdout
    assert tasks("cancel", task_id).stdout.strip() == f"cancelled {task_id}"
    assert '"Cancelled": 1' in tasks("stats", "--json").stdout


def test_unreachable_postgres_is_a_clear_error(tmp_path):
    result = run_worker("postgresql://nobody:hunter2secret@127.0.0.1:9/none", tmp_path / "out", "--once",
                        timeout=60)
    assert result.returncode == 1
    assert "cannot reach Postgres at 127.0.0.1:9/none" in result.stderr
    assert "hunter2secret" not in result.stderr


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
