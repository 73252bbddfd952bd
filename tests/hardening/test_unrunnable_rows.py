"""#21 point 6: rows that can never run (a dependency on itself, a cycle, a missing dependency, awaiting
children it does not have, a status no worker looks for) are failed with the reason, on both backends,
and the good row behind them still runs at once; rows that only wait are left alone."""

from __future__ import annotations

import json
import subprocess
import sys

from source.db.models import NewTask, TaskStatus
from source.db.sqlite import SqliteTaskStore
from tests.hardening.raw_rows import POLL_INTERVAL, RawBackend, assert_good_row_completed, drain
from tests.helpers import REPO_ROOT


def _set(backend, task_id: str, assignments: str, *args) -> None:
    backend.sql(f"UPDATE tasks SET {assignments} WHERE id = {backend.ph}", *args, task_id)


def _allow_any_status(backend) -> None:
    """A legacy Postgres table from before the status check (SQLite never had one)."""
    if backend.name == "postgres":
        backend.sql("ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_status_check")


def test_row_depending_on_itself_fails_as_a_cycle(raw_backend, tmp_path):
    loop = raw_backend.add_old(task_id="self-loop")
    _set(raw_backend, loop, f"dependant_on = {raw_backend.ph}", loop)
    good = raw_backend.store.add_task(NewTask("ping", {}))
    elapsed = drain(raw_backend.store, tmp_path / "out")
    assert_good_row_completed(raw_backend.store, good)
    assert elapsed < POLL_INTERVAL
    assert raw_backend.status_of(loop) == ("Failed", "dependency cycle: self-loop → self-loop")


def test_two_and_three_row_cycles_fail_with_the_cycle_and_rows_behind_them_fail_by_the_cascade(raw_backend, tmp_path):
    a, b = raw_backend.add_old(task_id="a"), raw_backend.add_old(task_id="b")
    _set(raw_backend, a, f"dependant_on = {raw_backend.ph}", b)
    _set(raw_backend, b, f"dependant_on = {raw_backend.ph}", a)
    x, y, z = (raw_backend.add_old(task_id=name) for name in "xyz")
    _set(raw_backend, x, f"dependant_on = {raw_backend.ph}", y)
    _set(raw_backend, y, f"dependant_on = {raw_backend.ph}", z)
    _set(raw_backend, z, f"dependant_on = {raw_backend.ph}", x)
    behind = raw_backend.store.add_task(NewTask("ping", {}, id="behind", dependant_on=a))
    good = raw_backend.store.add_task(NewTask("ping", {}))

    drain(raw_backend.store, tmp_path / "out")

    assert_good_row_completed(raw_backend.store, good)
    assert raw_backend.status_of(a) == ("Failed", "dependency cycle: a → b → a")
    assert raw_backend.status_of(b) == ("Failed", "dependency cycle: b → a → b")
    assert raw_backend.status_of(y) == ("Failed", "dependency cycle: y → z → x → y")
    status, error = raw_backend.status_of(behind)
    assert status == "Failed" and error.startswith("dependency a ended Failed: dependency cycle: a → b → a"), error


def test_waiting_chains_are_not_mistaken_for_cycles(raw_backend):
    """A chain whose head is Queued or running only waits: the sweep must leave every link alone."""
    head = raw_backend.store.add_task(NewTask("ping", {}, id="head"))
    previous = head
    for index in range(5):
        previous = raw_backend.store.add_task(NewTask("ping", {}, id=f"link{index}", dependant_on=previous))
    running = raw_backend.store.claim_next_task("w", lease_seconds=60)
    assert running.id == head
    raw_backend.store.add_task(NewTask("ping", {}, id="later", dependant_on="link4"))
    assert raw_backend.store.fail_unrunnable_tasks() == []
    assert raw_backend.store.stats().by_status == {"In Progress": 1, "Queued": 6}


def test_missing_dependency_fails_with_its_id(raw_backend, tmp_path):
    orphan = raw_backend.add_old(task_id="orphan")
    _set(raw_backend, orphan, "dependant_on = 'no-such-task'")
    good = raw_backend.store.add_task(NewTask("ping", {}))
    drain(raw_backend.store, tmp_path / "out")
    assert_good_row_completed(raw_backend.store, good)
    assert raw_backend.status_of(orphan) == ("Failed", "dependency no-such-task does not exist")


def test_awaiting_children_without_children_fails(raw_backend, tmp_path):
    parked = raw_backend.add_old(task_id="parked")
    _set(raw_backend, parked, "status = 'In Progress', awaiting_children = true, worker_id = 'gone'")
    queued = raw_backend.add_old(task_id="queued-parked")
    _set(raw_backend, queued, "awaiting_children = true")
    good = raw_backend.store.add_task(NewTask("ping", {}))
    drain(raw_backend.store, tmp_path / "out")
    assert_good_row_completed(raw_backend.store, good)
    assert raw_backend.status_of(parked) == ("Failed", "awaiting children but has none")
    assert raw_backend.status_of(queued) == ("Failed", "awaiting children but has none")


def test_unknown_status_fails_with_the_status_named_and_stats_report_it(raw_backend, tmp_path):
    _allow_any_status(raw_backend)
    lower = raw_backend.add_old(task_id="lower")
    _set(raw_backend, lower, "status = 'queued'")
    assert raw_backend.store.stats().by_status == {"queued": 1}
    assert "unknown status 'queued': 1" in _tasks_stats(raw_backend)
    good = raw_backend.store.add_task(NewTask("ping", {}))
    drain(raw_backend.store, tmp_path / "out")
    assert_good_row_completed(raw_backend.store, good)
    assert raw_backend.status_of(lower) == (
        "Failed", "status 'queued' is not one of Queued, In Progress, Complete, Failed, Cancelled")


def test_tasks_add_refuses_a_missing_dependency(raw_backend):
    result = _tasks(raw_backend, "add", "ping", "{}", "--dependant-on", "no-such-task", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["Error: dependency no-such-task does not exist"]
    assert raw_backend.store.stats().by_status == {}
    dependency = raw_backend.store.add_task(NewTask("ping", {}))
    assert _tasks(raw_backend, "add", "ping", "{}", "--dependant-on", dependency).returncode == 0


def test_sqlite_blob_dependency_fails_with_the_bytes_shown(tmp_path):
    store = SqliteTaskStore(tmp_path / "tasks.db")
    store.migrate()
    backend = RawBackend("sqlite", store, path=tmp_path / "tasks.db")
    blob = backend.add_old(task_id="blob-dep")
    _set(backend, blob, "dependant_on = x'00ff'")
    good = store.add_task(NewTask("ping", {}))
    drain(store, tmp_path / "out")
    assert_good_row_completed(store, good)
    assert backend.status_of(blob) == ("Failed", "dependant_on is a BLOB, not text: X'00FF'")
    assert store.get_task(blob).status is TaskStatus.FAILED
    store.close()


def _tasks(backend, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    store_args = ["--db-file", str(backend.path)] if backend.name == "sqlite" else ["--db-url", backend.url]
    command, rest = args[0], args[1:]
    result = subprocess.run([sys.executable, "-m", "source.cli.tasks", command, *store_args, *rest], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _tasks_stats(backend) -> str:
    text = _tasks(backend, "stats").stdout
    as_json = json.loads(_tasks(backend, "stats", "--json").stdout)
    assert as_json["unknown_statuses"] == {"queued": 1}
    return text
