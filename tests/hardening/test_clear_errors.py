"""#21 point 5 (ids) and 7: bad input gets one clear line, never a traceback: the tasks CLI exits 1 with one
line; an over-long id is refused at insert by both databases; a huge seed fails the row with its range."""

from __future__ import annotations

import subprocess
import sys

import pytest

from source.db.models import NewTask, TaskRejected, TaskStatus
from source.worker.settings import WorkerSettings
from tests.helpers import REPO_ROOT, in_process_worker


def _tasks(backend, command: str, *args: str) -> subprocess.CompletedProcess:
    store_args = ["--db-file", str(backend.path)] if backend.name == "sqlite" else ["--db-url", backend.url]
    return subprocess.run([sys.executable, "-m", "source.cli.tasks", command, *store_args, *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


BAD_INVOCATIONS = [
    (("add", "ping", "{}", "--priority", str(10**30)), "priority must be an integer from -2147483648 to 2147483647"),
    (("add", "ping", "{}", "--priority", str(2**31)), "priority must be an integer from"),
    (("add", "ping", "{}", "--id", "x" * 300), "task id must be 1 to 200 characters, got 300"),
    (("add", "ping", "{}", "--id", ""), "task id must be 1 to 200 characters, got 0"),
    (("add", "ping", "{}", "--max-attempts", str(10**12)), "max_attempts must be an integer from"),
    (("add", "ping", "{}", "--dependant-on", "nowhere"), "dependency nowhere does not exist"),
    (("cancel", "no-such-task"), "no task no-such-task"),
    (("retry", "no-such-task"), "no task no-such-task"),
    (("show", "no-such-task"), "no task no-such-task"),
]


def test_tasks_cli_answers_bad_input_with_one_line_and_exit_1(raw_backend):
    for args, expected in BAD_INVOCATIONS:
        line = _one_line_error(_tasks(raw_backend, *args))
        assert expected in line, (args, line)
    assert raw_backend.store.stats().by_status == {}


def test_tasks_add_with_a_duplicate_id_is_one_line(raw_backend):
    assert _tasks(raw_backend, "add", "ping", "{}", "--id", "dup").returncode == 0
    assert _one_line_error(_tasks(raw_backend, "add", "ping", "{}", "--id", "dup")) == \
        "Error: task id dup already exists"
    assert raw_backend.store.stats().by_status == {"Queued": 1}


def test_store_refuses_a_duplicate_id_with_a_task_rejected(raw_backend):
    raw_backend.store.add_task(NewTask("ping", {}, id="twice"))
    with pytest.raises(TaskRejected, match="task id twice already exists"):
        raw_backend.store.add_task(NewTask("ping", {}, id="twice"))


def test_database_refuses_an_id_over_the_limit_from_plain_sql(raw_backend):
    with pytest.raises(Exception) as caught:  # noqa: B017  (sqlite3.IntegrityError / psycopg.CheckViolation)
        raw_backend.sql(f"INSERT INTO tasks (id, task_type, params, status) VALUES ({raw_backend.ph}, 'ping', '{{}}', "
                        "'Queued')", "y" * 201)
    assert "200" in str(caught.value) or "tasks_id_length" in str(caught.value), caught.value
    raw_backend.sql(f"INSERT INTO tasks (id, task_type, params, status) VALUES ({raw_backend.ph}, 'ping', '{{}}', "
                    "'Queued')", "y" * 200)
    assert raw_backend.store.get_task("y" * 200).status is TaskStatus.QUEUED


@pytest.mark.parametrize("seed", [1e30, 2**64, -2])
def test_seed_out_of_range_fails_the_row_with_the_range(sqlite_store, tmp_path, monkeypatch, seed):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task_id = sqlite_store.add_task(NewTask("t2v", {"model": "tiny_t2v", "prompt": "x", "seed": seed}))
    worker = in_process_worker(sqlite_store, WorkerSettings(worker_id="seed", main_output_dir=tmp_path / "out"),
                               exit_when_idle=True)
    assert worker.run() == 0
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED
    assert "seed must be -1 (random) or an integer from 0 to 9223372036854775807" in row.error_message, \
        row.error_message
    assert "Overflow" not in row.error_message
