"""What a supervisor (systemd, Kubernetes) sees: SIGTERM lets the running task finish within the grace
period and exits 0; a second signal forces the exit at once (130), and the row it held is reclaimed
after its lease and completed by the next worker."""

from __future__ import annotations

import signal
import time

from source.db.models import NewTask, TaskStatus
from tests.helpers import ping_executions, run_worker, start_worker, wait_for


def test_sigterm_lets_the_task_finish_within_the_grace_period(sqlite_store, tmp_path):
    out = tmp_path / "out"
    task_id = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 1.5}))
    proc = start_worker(sqlite_store.path, out, "--shutdown-grace", "30", "--poll-interval", "0.2")
    wait_for(lambda: sqlite_store.get_task(task_id).status is TaskStatus.IN_PROGRESS, timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    row = sqlite_store.get_task(task_id)
    assert (row.status, row.attempts) == (TaskStatus.COMPLETE, 1)


def test_a_second_signal_forces_the_exit_and_the_row_is_reclaimed_later(sqlite_store, tmp_path):
    out = tmp_path / "out"
    task_id = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 30}))
    proc = start_worker(sqlite_store.path, out, "--worker", "impatient", "--shutdown-grace", "60",
                        "--lease-seconds", "1.5", "--poll-interval", "0.2")
    wait_for(lambda: sqlite_store.get_task(task_id).status is TaskStatus.IN_PROGRESS, timeout=30)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None  # still inside its grace period
    forced_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 130
    assert time.monotonic() - forced_at < 5
    assert sqlite_store.get_task(task_id).status is TaskStatus.IN_PROGRESS  # nobody gave it back...

    # shorten the rerun so the rescue is quick (the producer may edit a row's params)
    sqlite_store._conn().execute("UPDATE tasks SET params = ? WHERE id = ?", ('{"sleep_seconds": 0}', task_id))
    rescuer = run_worker(sqlite_store.path, out, "--worker", "rescuer", "--max-tasks", "1", "--lease-seconds", "1.5",
                         "--poll-interval", "0.2", timeout=60)
    assert rescuer.returncode == 0, rescuer.stderr[-2000:]
    row = sqlite_store.get_task(task_id)  # ...the lease did
    assert (row.status, row.attempts, row.worker_id) == (TaskStatus.COMPLETE, 2, "rescuer")
    assert [run["worker_id"] for run in ping_executions(out, task_id)] == ["rescuer"]
