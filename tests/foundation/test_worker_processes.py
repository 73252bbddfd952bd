"""Real worker processes on one SQLite file: exactly-once claims, crashes, shutdown, cancel, wake-up."""

from __future__ import annotations

import signal
import time
from collections import Counter

from source.db.models import NewTask, TaskStatus
from source.db.sql_files import list_migrations
from source.db.sqlite import SqliteTaskStore
from tests.helpers import log_events, ping_executions, run_worker, run_workers_once, start_worker, wait_for


def test_four_processes_process_two_hundred_rows_exactly_once(sqlite_store, tmp_path):
    out = tmp_path / "out"
    ids = [sqlite_store.add_task(NewTask("ping", {"message": f"row {i}"})) for i in range(200)]
    run_workers_once(sqlite_store.path, out, 4, "w")
    executions = {task_id: ping_executions(out, task_id) for task_id in ids}
    assert all(len(runs) == 1 for runs in executions.values()), [k for k, v in executions.items() if len(v) != 1]
    rows = {t.id: t for t in sqlite_store.list_tasks(limit=1000)}
    assert {row.status for row in rows.values()} == {TaskStatus.COMPLETE}
    assert all(rows[i].attempts == 1 for i in ids)
    # each row was completed by the worker whose handler ran it
    assert all(rows[i].worker_id == executions[i][0]["worker_id"] for i in ids)
    per_worker = Counter(row.worker_id for row in rows.values())
    assert len(per_worker) >= 2, per_worker  # the work was actually shared


def test_killed_worker_task_is_reclaimed_after_lease_and_completed(sqlite_store, tmp_path):
    out = tmp_path / "out"
    task_id = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 2}))
    doomed = start_worker(sqlite_store.path, out, "--worker", "doomed", "--lease-seconds", "1.5")
    wait_for(lambda: sqlite_store.get_task(task_id).status is TaskStatus.IN_PROGRESS, timeout=30)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    rescuer = run_worker(sqlite_store.path, out, "--worker", "rescuer", "--max-tasks", "1",
                         "--lease-seconds", "1.5", timeout=60)
    assert rescuer.returncode == 0, rescuer.stderr
    row = sqlite_store.get_task(task_id)
    assert (row.status, row.attempts, row.worker_id) == (TaskStatus.COMPLETE, 2, "rescuer")
    events = [e["event"] for e in log_events(rescuer.stderr)]
    assert "lease_reclaimed" in events


def test_dependency_chain_runs_in_order_and_a_failed_head_fails_the_chain(sqlite_store, tmp_path):
    out = tmp_path / "out"
    first = sqlite_store.add_task(NewTask("ping", {"message": "1"}))
    second = sqlite_store.add_task(NewTask("ping", {"message": "2"}, dependant_on=first))
    third = sqlite_store.add_task(NewTask("ping", {"message": "3"}, dependant_on=second, priority=9))
    bad_head = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": -1}))
    bad_child = sqlite_store.add_task(NewTask("ping", {}, dependant_on=bad_head))
    bad_grandchild = sqlite_store.add_task(NewTask("ping", {}, dependant_on=bad_child))
    result = run_worker(sqlite_store.path, out, "--once")
    assert result.returncode == 0, result.stderr
    started = [sqlite_store.get_task(i).generation_started_at for i in (first, second, third)]
    assert started == sorted(started)
    assert all(sqlite_store.get_task(i).status is TaskStatus.COMPLETE for i in (first, second, third))
    head = sqlite_store.get_task(bad_head)
    assert head.status is TaskStatus.FAILED and "sleep_seconds" in head.error_message
    child, grandchild = sqlite_store.get_task(bad_child), sqlite_store.get_task(bad_grandchild)
    assert child.status is TaskStatus.FAILED and child.error_message.startswith(f"dependency {bad_head} ended Failed")
    assert grandchild.error_message.startswith(f"dependency {bad_child} ended Failed")


def test_priority_order_is_respected_by_a_worker(sqlite_store, tmp_path):
    out = tmp_path / "out"
    ids = {p: sqlite_store.add_task(NewTask("ping", {}, priority=p)) for p in (0, 3, 1, 7)}
    assert run_worker(sqlite_store.path, out, "--once").returncode == 0
    order = sorted(ids, key=lambda p: sqlite_store.get_task(ids[p]).generation_started_at)
    assert order == [7, 3, 1, 0]


def test_sigterm_requeues_the_running_task_without_counting_the_attempt(sqlite_store, tmp_path):
    out = tmp_path / "out"
    task_id = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 60}))
    proc = start_worker(sqlite_store.path, out, "--shutdown-grace", "0.5")
    wait_for(lambda: sqlite_store.get_task(task_id).status is TaskStatus.IN_PROGRESS, timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    row = sqlite_store.get_task(task_id)
    assert (row.status, row.attempts, row.worker_id) == (TaskStatus.QUEUED, 0, None)


def test_task_finishing_within_the_grace_period_completes_on_shutdown(sqlite_store, tmp_path):
    out = tmp_path / "out"
    task_id = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 1.0}))
    later = sqlite_store.add_task(NewTask("ping", {}, priority=-1))
    proc = start_worker(sqlite_store.path, out, "--shutdown-grace", "20")
    wait_for(lambda: sqlite_store.get_task(task_id).status is TaskStatus.IN_PROGRESS, timeout=30)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert sqlite_store.get_task(task_id).status is TaskStatus.COMPLETE
    assert sqlite_store.get_task(later).status is TaskStatus.QUEUED  # no new claims after the signal


def test_second_signal_exits_at_once(sqlite_store, tmp_path):
    out = tmp_path / "out"
    task_id = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 60}))
    proc = start_worker(sqlite_store.path, out, "--shutdown-grace", "60")
    wait_for(lambda: sqlite_store.get_task(task_id).status is TaskStatus.IN_PROGRESS, timeout=30)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert proc.wait(timeout=10) == 130
    assert time.monotonic() - started < 5


def test_cancelling_a_running_task_stops_it_and_the_worker_goes_on(sqlite_store, tmp_path):
    out = tmp_path / "out"
    long_id = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 60}))
    next_id = sqlite_store.add_task(NewTask("ping", {}, priority=-1))
    proc = start_worker(sqlite_store.path, out, "--max-tasks", "2")
    wait_for(lambda: sqlite_store.get_task(long_id).status is TaskStatus.IN_PROGRESS, timeout=30)
    cancelled_at = time.monotonic()
    assert sqlite_store.cancel_task(long_id)
    wait_for(lambda: sqlite_store.get_task(next_id).status is TaskStatus.COMPLETE, timeout=30)
    assert time.monotonic() - cancelled_at < 5
    assert proc.wait(timeout=30) == 0
    assert sqlite_store.get_task(long_id).status is TaskStatus.CANCELLED
    assert ping_executions(out, long_id) == []  # stopped before its output was written


def test_task_timeout_fails_the_task_with_the_reason(sqlite_store, tmp_path):
    out = tmp_path / "out"
    task_id = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 30}))
    result = run_worker(sqlite_store.path, out, "--once", "--task-timeout", "0.5")
    assert result.returncode == 0, result.stderr
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED and row.error_message == "the task timed out after 0.5 s"


def test_idle_worker_picks_up_a_new_row_well_before_the_poll_interval(sqlite_store, tmp_path):
    out, log = tmp_path / "out", tmp_path / "worker.log"
    proc = start_worker(sqlite_store.path, out, "--max-tasks", "3", "--poll-interval", "10", log_path=log)
    try:
        # let it go idle: started (imports take seconds on a loaded machine), then past its first empty claim
        wait_for(lambda: log.exists() and any(e.get("event") == "worker_started" for e in log_events(log.read_text())),
                 timeout=60)
        time.sleep(1.0)
        latencies = []
        for _ in range(3):
            task_id = sqlite_store.add_task(NewTask("ping", {}))
            wait_for(lambda tid=task_id: sqlite_store.get_task(tid).status is TaskStatus.COMPLETE, timeout=10)
            latencies.append(_pickup_seconds(sqlite_store.get_task(task_id)))
            time.sleep(0.3)
        assert max(latencies) < 1.0, latencies
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_logs_are_json_lines_carrying_task_and_worker_ids(sqlite_store, tmp_path):
    out = tmp_path / "out"
    task_id = sqlite_store.add_task(NewTask("ping", {"message": "hello"}))
    log_file = tmp_path / "saved.log"
    result = run_worker(sqlite_store.path, out, "--once", "--worker", "logger-1", "--save-logging", str(log_file))
    events = log_events(result.stderr)
    task_events = [e for e in events if e.get("task_id") == task_id]
    assert {"task_claimed", "pong", "task_completed"} <= {e["event"] for e in task_events}
    assert all(e["worker_id"] == "logger-1" and e["task_type"] == "ping" for e in task_events)
    saved = log_events(log_file.read_text())
    assert any(e["event"] == "task_completed" and e["task_id"] == task_id for e in saved)


def _pickup_seconds(task) -> float:
    from datetime import datetime

    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return (parse(task.generation_started_at) - parse(task.created_at)).total_seconds()


def test_delete_db_starts_from_an_empty_schema(tmp_path):
    db = tmp_path / "tasks.db"
    store = SqliteTaskStore(db)
    store.migrate()
    store.add_task(NewTask("ping", {}))
    store.close()
    result = run_worker(db, tmp_path / "out", "--delete-db", "--once")
    assert result.returncode == 0, result.stderr
    fresh = SqliteTaskStore(db)
    assert fresh.list_tasks() == []
    assert fresh.schema_version() == list_migrations("sqlite")[-1].version
