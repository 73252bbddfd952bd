"""Database outage on SQLite: another process holds an exclusive lock on the db file for longer than the
busy timeout. Workers back off and log it, keep running, recover when the lock goes, and lose nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

from source.db.models import NewTask, TaskStatus
from tests.helpers import log_events, ping_executions, start_worker, wait_for

BUSY_TIMEOUT = 0.3
LOCK_SECONDS = 3.0
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", flush=True)
"""


def hold_exclusive_lock(db_file, seconds: float) -> subprocess.Popen:
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(db_file), str(seconds)], stdout=subprocess.PIPE,
                              text=True)
    assert locker.stdout.readline().strip() == "locked"
    return locker


def test_workers_back_off_while_the_db_is_locked_and_recover_losing_nothing(sqlite_store, tmp_path):
    out = tmp_path / "out"
    ids = [sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 0.2, "message": str(i)})) for i in range(40)]
    # The lease outlives the outage: a row finished during it must be completed by its own worker.
    args = ("--db-busy-timeout", str(BUSY_TIMEOUT), "--lease-seconds", "20", "--poll-interval", "0.2")
    logs = [tmp_path / f"w{i}.log" for i in range(2)]
    workers = [start_worker(sqlite_store.path, out, "--worker", f"w{i}", *args, log_path=logs[i]) for i in range(2)]
    try:
        wait_for(lambda: sqlite_store.stats().by_status.get("Complete", 0) >= 4, timeout=60)
        locker = hold_exclusive_lock(sqlite_store.path, LOCK_SECONDS)
        locked_at = time.monotonic()
        time.sleep(LOCK_SECONDS / 2)
        assert all(proc.poll() is None for proc in workers), "a worker died during the outage"
        assert locker.wait(timeout=30) == 0
        released_after = time.monotonic() - locked_at
        assert released_after >= LOCK_SECONDS
        wait_for(lambda: sqlite_store.stats().by_status == {"Complete": 40}, timeout=60)
    finally:
        for proc in workers:
            proc.terminate()
        codes = [proc.wait(timeout=30) for proc in workers]
    assert codes == [0, 0]

    events = [event for path in logs for event in log_events(path.read_text())]
    warnings = Counter(e["event"] for e in events if e.get("level") == "warning")
    # Finished tasks met the lock, backed off and were reported once it went.
    assert warnings["report_failed"] >= 2, warnings
    assert all("locked" in e["error"] for e in events if e.get("event") in ("claim_failed", "report_failed"))
    # Nothing lost and nothing run twice: every row ran once and was completed by the worker that ran it.
    for task_id in ids:
        row = sqlite_store.get_task(task_id)
        runs = ping_executions(out, task_id)
        assert (row.status, row.attempts, len(runs)) == (TaskStatus.COMPLETE, 1, 1), (row, runs)
        assert runs[0]["worker_id"] == row.worker_id


def test_an_idle_worker_backs_off_during_a_lock_and_picks_up_rows_added_after_it(sqlite_store, tmp_path):
    out, log = tmp_path / "out", tmp_path / "idle.log"
    worker = start_worker(sqlite_store.path, out, "--worker", "idle", "--db-busy-timeout", str(BUSY_TIMEOUT),
                          "--lease-seconds", "2", "--poll-interval", "0.2", log_path=log)
    try:
        wait_for(lambda: any(e.get("event") == "worker_started" for e in log_events(log.read_text())), timeout=30)
        locker = hold_exclusive_lock(sqlite_store.path, 2.0)
        assert locker.wait(timeout=30) == 0
        assert worker.poll() is None, "the worker died during the outage"
        task_id = sqlite_store.add_task(NewTask("ping", {"message": "after the outage"}))
        wait_for(lambda: sqlite_store.get_task(task_id).status is TaskStatus.COMPLETE, timeout=30)
    finally:
        worker.terminate()
        assert worker.wait(timeout=30) == 0
    claim_failures = [e for e in log_events(log.read_text()) if e.get("event") == "claim_failed"]
    assert len(claim_failures) >= 2 and all("locked" in e["error"] for e in claim_failures)
    # backoff grows between attempts instead of spinning on the lock
    assert claim_failures[1]["retry_in"] > claim_failures[0]["retry_in"]
