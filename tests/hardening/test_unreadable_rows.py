"""#21 point 1 and 7: a row that cannot be decoded or typed is failed by the claim itself, with a message that
names the column and shows the bytes escaped, and the good row behind it runs in the same breath."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from source.db.models import NewTask, TaskStatus
from source.db.sqlite import SqliteTaskStore
from tests.hardening.raw_rows import POLL_INTERVAL, assert_good_row_completed, drain
from tests.helpers import REPO_ROOT, run_worker

NESTED_5000 = '{"a": ' * 5000 + "1" + "}" * 5000
LONG_ID = "x" * 300

# (case, backends, SQL that breaks the row {id} = the row's id placeholder, SQL that finds it again,
#  fragment the stored error_message must contain)
CASES = [
    ("params not UTF-8", {"sqlite"},
     "UPDATE tasks SET params = CAST(x'7b226d223a2280ff227d' AS TEXT) WHERE id = {ph}", "id = {ph}",
     "params is not valid UTF-8 text: b'{\"m\":\"\\x80\\xff\"}'"),
    ("task_type not UTF-8", {"sqlite"},
     "UPDATE tasks SET task_type = CAST(x'70696e6780' AS TEXT) WHERE id = {ph}", "id = {ph}",
     "task_type is not valid UTF-8 text: b'ping\\x80'"),
    ("id not UTF-8", {"sqlite"},
     "UPDATE tasks SET id = CAST(x'6964ff' AS TEXT) WHERE id = {ph}", "id = CAST(x'6964ff' AS TEXT)",
     "id is not valid UTF-8 text: b'id\\xff'"),
    ("params BLOB", {"sqlite"},
     "UPDATE tasks SET params = x'7b7d' WHERE id = {ph}", "id = {ph}", "params is a BLOB, not text: b'{}'"),
    ("id BLOB", {"sqlite"},
     "UPDATE tasks SET id = x'626c6f622d6964' WHERE id = {ph}", "id = x'626c6f622d6964'",
     "id is a BLOB, not text: b'blob-id'"),
    ("priority text", {"sqlite"},
     "UPDATE tasks SET priority = 'high' WHERE id = {ph}", "id = {ph}", "priority is 'high', not an integer"),
    ("max_attempts text", {"sqlite"},
     "UPDATE tasks SET max_attempts = 'three' WHERE id = {ph}", "id = {ph}",
     "max_attempts is 'three', not an integer"),
    ("priority real", {"sqlite"},
     "UPDATE tasks SET priority = 2.5 WHERE id = {ph}", "id = {ph}", "priority is 2.5, not an integer"),
    ("dependant_on BLOB", {"sqlite"},
     "UPDATE tasks SET dependant_on = x'00ff' WHERE id = {ph}", "id = {ph}", "dependant_on is a BLOB"),
    ("params unparseable", {"sqlite"},
     "UPDATE tasks SET params = '{broken' WHERE id = {ph}", "id = {ph}", "params is not valid JSON"),
    ("params nested 5,000 levels", {"postgres"},
     "UPDATE tasks SET params = '" + NESTED_5000 + "'::jsonb WHERE id = {ph}", "id = {ph}",
     "params is nested too deeply to parse"),
    ("params nested 5,000 levels", {"sqlite"},
     "UPDATE tasks SET params = '" + NESTED_5000 + "' WHERE id = {ph}", "id = {ph}",
     "params is nested too deeply to parse"),
    ("params an array", {"sqlite", "postgres"},
     "UPDATE tasks SET params = '[1, 2]' WHERE id = {ph}", "id = {ph}", "params must be a JSON object"),
]


def _drop_id_limit(backend) -> None:
    """Rows written before the id limit existed (an older schema, a legacy table) may be longer."""
    if backend.name == "sqlite":
        backend.sql("DROP TRIGGER IF EXISTS tasks_id_length_insert")
        backend.sql("DROP TRIGGER IF EXISTS tasks_id_length_update")
    else:
        backend.sql("ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_id_length")


# Each case on the backends whose columns can hold it (a Postgres column is typed and its text is UTF-8).
RUNS = [(backend, case) for case in CASES for backend in sorted(case[1])]


@pytest.mark.parametrize(("raw_backend", "case"), RUNS, ids=[f"{b}-{c[0]}" for b, c in RUNS],
                         indirect=["raw_backend"])
def test_unreadable_row_is_failed_by_the_claim_and_the_next_row_runs(raw_backend, tmp_path, case):
    _, _, breaks, finds, expected = case
    bad = raw_backend.add_old()
    raw_backend.sql(breaks.replace("{ph}", raw_backend.ph), bad)
    good = raw_backend.store.add_task(NewTask("ping", {}))

    elapsed = drain(raw_backend.store, tmp_path / "out")

    assert_good_row_completed(raw_backend.store, good)
    assert elapsed < POLL_INTERVAL, f"the good row waited {elapsed:.2f} s behind the bad one"
    args = (bad,) if "{ph}" in finds else ()
    row = raw_backend.sql(f"SELECT status, error_message FROM tasks WHERE {finds.replace('{ph}', raw_backend.ph)}",
                          *args)[0]
    status, error = (v.decode() if isinstance(v, bytes) else v for v in row)
    assert status == "Failed" and expected in error, error
    # the broken row never ran: ping writes one file per execution, the good row's only
    assert len(list((tmp_path / "out").rglob("*ping.json"))) == 1


def test_id_longer_than_the_limit_already_in_the_table_is_failed_at_claim(raw_backend, tmp_path):
    _drop_id_limit(raw_backend)
    raw_backend.add_old(task_id=None)
    raw_backend.sql(f"INSERT INTO tasks (id, task_type, params, status, created_at) VALUES ({raw_backend.ph}, "
                    f"'ping', '{{}}', 'Queued', '2000-01-01T00:00:00.000Z')", LONG_ID)
    good = raw_backend.store.add_task(NewTask("ping", {}))
    drain(raw_backend.store, tmp_path / "out")
    assert_good_row_completed(raw_backend.store, good)
    status, error = raw_backend.status_of(LONG_ID)
    assert status == "Failed" and "id is 300 characters; the limit is 200" in error, error


def test_many_unreadable_rows_in_a_row_do_not_hold_up_the_good_one(raw_backend, tmp_path):
    for index in range(30):
        bad = raw_backend.add_old(age_seconds=600 + index)
        raw_backend.sql(f"UPDATE tasks SET params = '[{index}]' WHERE id = {raw_backend.ph}", bad)
    good = raw_backend.store.add_task(NewTask("ping", {}))
    elapsed = drain(raw_backend.store, tmp_path / "out")
    assert_good_row_completed(raw_backend.store, good)
    assert elapsed < POLL_INTERVAL
    assert raw_backend.store.stats().by_status == {"Failed": 30, "Complete": 1}


def test_once_worker_process_exits_after_an_undecodable_sqlite_row(tmp_path):
    db = tmp_path / "tasks.db"
    store = SqliteTaskStore(db)
    store.migrate()
    bad = store.add_task(NewTask("ping", {}))
    store._conn().execute("UPDATE tasks SET params = CAST(x'7b226d223a2280ff227d' AS TEXT) WHERE id = ?", (bad,))
    good = store.add_task(NewTask("ping", {}))
    result = run_worker(db, tmp_path / "out", "--once", "--poll-interval", "1", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert store.get_task(good).status is TaskStatus.COMPLETE
    broken = store.get_task(bad)
    assert broken.status is TaskStatus.FAILED
    assert "params is not valid UTF-8 text" in broken.error_message
    assert "Could not decode" not in result.stderr
    store.close()


def test_tasks_list_and_show_read_an_undecodable_row_without_a_traceback(tmp_path):
    db = tmp_path / "tasks.db"
    store = SqliteTaskStore(db)
    store.migrate()
    bad = store.add_task(NewTask("ping", {}, id="bad"))
    store._conn().execute("UPDATE tasks SET params = CAST(x'7b226d223a2280ff227d' AS TEXT), status = 'queued' "
                          "WHERE id = ?", (bad,))

    def tasks(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "source.cli.tasks", args[0], "--db-file", str(db), *args[1:]],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    listed = tasks("list")
    assert listed.returncode == 0 and "bad" in listed.stdout, listed.stderr
    shown = tasks("show", "bad")
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)
    assert row["params"] == "b'{\"m\":\"\\x80\\xff\"}'"
    assert row["row_problems"] == ["params is not valid UTF-8 text: b'{\"m\":\"\\x80\\xff\"}'",
                                   "status 'queued' is not one of Queued, In Progress, Complete, Failed, Cancelled"]
    store.close()
