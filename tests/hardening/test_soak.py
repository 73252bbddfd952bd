"""Soak: 4 real worker processes, thousands of mixed fast rows, a supervisor that ``kill -9``s a random
worker every few seconds and restarts it. Nothing is lost, nothing completes twice, nothing is stuck.

Runs on SQLite and on Postgres. The normal suite runs ``SOAK_ROWS`` rows per backend (default 1,000,
~10 s each on the 2-core dev box); the full 5,000-row soak the issue asks for (~45 s each) runs with
``SOAK_ROWS=5000 python -m pytest -m soak tests/hardening/test_soak.py -s``.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from source.db.models import NewTask, TaskStatus
from tests.hardening.fleet import WorkerFleet
from tests.helpers import ping_executions, wait_for

SOAK_ROWS = int(os.environ.get("SOAK_ROWS", "1000"))
WORKERS = 4
LEASE_SECONDS = 2.0
WORKER_ARGS = ("--lease-seconds", str(LEASE_SECONDS), "--poll-interval", "0.2", "--shutdown-grace", "5")


@dataclass(frozen=True)
class Planned:
    """A row and the ending it must reach."""

    task: NewTask
    kind: str  # ok | slow | fragile | bad_params | unknown_type | dependant
    expected_error: str | None = None


def plan_rows(count: int, seed: int = 7) -> list[Planned]:
    rng = random.Random(seed)
    planned: list[Planned] = []
    for index in range(count):
        task_id = f"soak-{index:05d}"
        roll = rng.random()
        priority = rng.choice((0, 0, 0, 1, 2))
        if roll < 0.02:  # long enough that a kill often lands inside it: retried after the lease expires
            row = Planned(NewTask("ping", {"sleep_seconds": rng.uniform(0.05, 0.15)}, id=task_id, priority=priority),
                          "slow")
        elif roll < 0.025:  # one attempt only: a kill inside it ends the row Failed with max_attempts reached
            row = Planned(NewTask("ping", {"sleep_seconds": 0.2}, id=task_id, max_attempts=1), "fragile")
        elif roll < 0.08:
            bad = rng.choice(({"sleep_seconds": -1}, {"sleep_seconds": "soon"}, {"message": ["not", "text"]}))
            row = Planned(NewTask("ping", bad, id=task_id, priority=priority), "bad_params", "invalid params")
        elif roll < 0.10:
            row = Planned(NewTask("no_such_type", {"x": index}, id=task_id), "unknown_type", "unknown task type")
        elif roll < 0.13 and planned:
            head = rng.choice(planned[-50:]).task.id
            row = Planned(NewTask("ping", {"message": f"after {head}"}, id=task_id, dependant_on=head), "dependant")
        else:
            # A short sleep keeps the run long enough for the chaos to land kills on a fast, idle machine.
            row = Planned(NewTask("ping", {"message": f"row {index} ✓ ünïcode", "sleep_seconds": 0.03}, id=task_id,
                                  priority=priority), "ok")
        planned.append(row)
    return planned


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def soak_target(request, tmp_path):
    """(store, what worker.py is pointed at): a SQLite file, or a fresh Postgres schema's URL."""
    if request.param == "sqlite":
        store = request.getfixturevalue("sqlite_store")
        return store, store.path
    return request.getfixturevalue("postgres_store"), request.getfixturevalue("postgres_schema_url")


def _held_rows(store) -> dict[str, list[str]]:
    held: dict[str, list[str]] = {}
    for task in store.list_tasks(status=TaskStatus.IN_PROGRESS, limit=50):
        if task.worker_id:
            held.setdefault(task.worker_id, []).append(task.id)
    return held


@pytest.mark.slow
@pytest.mark.soak
def test_soak_with_random_kill_9_loses_nothing_and_completes_each_row_once(soak_target, tmp_path):
    store, target = soak_target
    rows = plan_rows(SOAK_ROWS)
    for row in rows:
        store.add_task(row.task)
    by_id = {row.task.id: row for row in rows}
    out = tmp_path / "out"

    started = time.monotonic()
    fleet = WorkerFleet(target, out, tmp_path / "logs", WORKERS, WORKER_ARGS,
                        held_rows=lambda: _held_rows(store)).start()
    fleet.start_chaos()

    def drained() -> bool:
        counts = store.stats().by_status
        return not counts.get("Queued") and not counts.get("In Progress")

    try:
        wait_for(drained, timeout=60 + SOAK_ROWS / 20, interval=0.5)
    finally:
        codes = fleet.stop()
    elapsed = time.monotonic() - started

    tasks = {task.id: task for task in store.list_tasks(limit=SOAK_ROWS + 10)}
    assert set(tasks) == set(by_id)
    status_counts = Counter(task.status.value for task in tasks.values())
    kinds = Counter(row.kind for row in rows)
    retried = sum(1 for task in tasks.values() if task.attempts > 1)
    lease_failed = [t for t in tasks.values() if t.error_message and t.error_message.startswith("lease expired")]
    events = fleet.events()
    completed_events = Counter(e["task_id"] for e in events if e.get("event") == "task_completed")
    print(f"\nsoak: {SOAK_ROWS} rows, {WORKERS} workers, {fleet.kills} kill -9 ({len(fleet.orphaned)} inside a "
          f"task), {fleet.starts} starts, "
          f"{elapsed:.1f} s ({SOAK_ROWS / elapsed:.0f} rows/s)\n  final: {dict(status_counts)}\n"
          f"  planned: {dict(kinds)}\n  retried after a kill: {retried}, failed at max_attempts: {len(lease_failed)}")

    assert fleet.orphaned, "no kill landed inside a task: the run was too short to test anything"
    assert set(status_counts) <= {"Complete", "Failed"}, status_counts
    # every row a killed worker left In Progress was reclaimed: run again, or failed at max_attempts
    for task_id in fleet.orphaned:
        task = tasks[task_id]
        assert task.attempts >= 2 or task.error_message.startswith("lease expired"), task
    assert all(code == 0 for code in codes), codes

    # Completed exactly once: one accepted completion per row (the store refuses a second); a kill can
    # lose at most the one log line written between a commit and the process's death.
    assert max(completed_events.values()) == 1
    missing_events = [i for i, t in tasks.items() if t.status is TaskStatus.COMPLETE and i not in completed_events]
    assert len(missing_events) <= fleet.kills
    assert not [i for i in completed_events if tasks[i].status is not TaskStatus.COMPLETE]

    for task_id, task in tasks.items():
        planned = by_id[task_id]
        runs = ping_executions(out, task_id)
        assert len(runs) <= task.attempts, (task_id, runs, task.attempts)
        if task.status is TaskStatus.COMPLETE:
            assert planned.kind in ("ok", "slow", "fragile", "dependant"), (task_id, planned.kind)
            # The run that completed the row is the last attempt, by the worker the row names.
            assert task.result["attempt"] == task.attempts and task.result["worker_id"] == task.worker_id
            assert any(r["attempt"] == task.attempts and r["worker_id"] == task.worker_id for r in runs), task_id
        elif task.error_message.startswith("lease expired"):
            assert task.attempts == task.max_attempts, task
        elif planned.kind == "dependant":
            head = tasks[planned.task.dependant_on]
            assert head.status is TaskStatus.FAILED
            assert task.error_message.startswith(f"dependency {head.id} ended Failed"), task.error_message
        else:
            assert planned.expected_error and planned.expected_error in task.error_message, (planned, task)
    # Rows that cannot succeed never do (a kill may have made them run twice before failing).
    for task_id, task in tasks.items():
        if by_id[task_id].kind in ("bad_params", "unknown_type"):
            assert task.status is TaskStatus.FAILED, task
