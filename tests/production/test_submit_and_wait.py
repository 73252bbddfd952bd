"""Submit and wait: ``tasks add --wait`` and ``POST /api/tasks?wait=S`` answer with the finished row of a task a
real worker process ran."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from source.web.app import create_app
from tests.helpers import REPO_ROOT, _worker_env, start_worker
from tests.web.live import serve_in_thread

pytestmark = pytest.mark.slow  # a worker process per test

# Valid to submit; only the worker finds that the file is not there.
MISSING_VIDEO = {"input_video_path": "/nonexistent/clip.mp4"}


@pytest.fixture
def worker(sqlite_store, tmp_path):
    """An idle worker on the test's SQLite file (wakes on each commit)."""
    proc = start_worker(sqlite_store.path, tmp_path / "out", "--poll-interval", "0.2",
                        log_path=tmp_path / "worker.log")
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _tasks_add(db, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    store = ["--db-url", db] if isinstance(db, str) else ["--db-file", str(db)]
    command = [sys.executable, "-m", "source.cli.tasks", "--log-format", "json", "add", *store, *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=_worker_env(None), capture_output=True, text=True,
                          timeout=timeout)


def test_tasks_add_wait_prints_the_completed_row_and_exits_0(sqlite_store, worker):
    done = _tasks_add(sqlite_store.path, "ping", '{"message": "hello"}', "--wait", "--timeout", "90")
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout)
    assert row["status"] == "Complete" and row["result"]["message"] == "hello" and row["output_location"]
    assert sqlite_store.get_task(row["id"]).status.value == "Complete"


def test_tasks_add_wait_on_a_failing_task_exits_1_with_its_error(sqlite_store, worker):
    done = _tasks_add(sqlite_store.path, "extract_frame", json.dumps(MISSING_VIDEO), "--max-attempts", "1", "--wait")
    assert done.returncode == 1
    row = json.loads(done.stdout)
    assert row["status"] == "Failed" and "params.input_video_path" in row["error_message"]
    assert f"task {row['id']} Failed: " in done.stderr and "input_video_path" in done.stderr


def test_tasks_add_wait_that_runs_out_exits_124_with_the_row_as_it_stands(sqlite_store):
    done = _tasks_add(sqlite_store.path, "ping", "{}", "--wait", "--timeout", "0.5")  # no worker runs
    assert done.returncode == 124
    assert json.loads(done.stdout)["status"] == "Queued" and "still Queued after 0.5 s" in done.stderr
    assert _tasks_add(sqlite_store.path, "ping", "{}", "--timeout", "3").returncode == 2  # --timeout needs --wait


def test_post_with_wait_answers_the_finished_row_or_202_when_the_wait_runs_out(sqlite_store, worker, tmp_path):
    with serve_in_thread(create_app(sqlite_store, output_root=tmp_path / "out", refresh_seconds=0.2)) as url:
        finished = httpx.post(f"{url}/api/tasks?wait=90", json={"task_type": "ping", "params": {"message": "sync"}},
                              timeout=100)
        assert finished.status_code == 201
        row = finished.json()
        assert row["status"] == "Complete" and row["result"]["message"] == "sync" and row["output_location"]

        running = httpx.post(f"{url}/api/tasks?wait=0.5", json={"task_type": "ping", "params": {"sleep_seconds": 30}},
                             timeout=30)
        assert running.status_code == 202 and running.json()["status"] in ("Queued", "In Progress")
        assert httpx.post(f"{url}/api/tasks/{running.json()['id']}/cancel").status_code == 200

        failed = httpx.post(f"{url}/api/tasks?wait=90", timeout=100,
                            json={"task_type": "extract_frame", "params": MISSING_VIDEO, "max_attempts": 1})
        assert failed.status_code == 201 and failed.json()["status"] == "Failed"
        assert "params.input_video_path" in failed.json()["error_message"]

        too_long = httpx.post(f"{url}/api/tasks?wait=100000", json={"task_type": "ping"})
        assert too_long.status_code == 422 and too_long.json()["detail"][0]["loc"] == ["query", "wait"]


@pytest.mark.postgres
def test_tasks_add_wait_on_postgres_sees_the_completion_no_notify_announces(postgres_store, postgres_schema_url,
                                                                           tmp_path):
    proc = start_worker(postgres_schema_url, tmp_path / "out", "--poll-interval", "0.2",
                        log_path=tmp_path / "worker.log")
    try:
        done = _tasks_add(postgres_schema_url, "ping", '{"message": "pg"}', "--wait", "--timeout", "90")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["status"] == "Complete"
