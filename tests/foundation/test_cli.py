"""The command lines as an operator uses them: worker.py flags and the tasks CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import REPO_ROOT, WORKER, run_worker

DOCUMENTED_FLAGS = [
    "--db-type", "--db-file", "--poll-interval", "--main-output-dir", "--worker", "--debug", "--save-logging",
    "--delete-db", "--migrate-only", "--apply-reward-lora", "--colour-match-videos",
    "--mask-active-frames / --no-mask-active-frames", "--supabase-url", "--supabase-access-token",
    "--supabase-anon-key", "--log-format", "--once", "--max-tasks", "--db-url", "--task-timeout",
    "--max-children-per-task", "--free-shutdown-requeues",
]


def tasks_cli(db, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "source.cli.tasks", *args[:1], "--db-file", str(db), *args[1:]]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_worker_help_documents_every_flag():
    result = subprocess.run([sys.executable, str(WORKER), "--help"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0
    for flag in DOCUMENTED_FLAGS:
        assert flag in result.stdout, flag


def test_supabase_without_settings_is_a_clear_error_not_a_fallback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE")}
    result = subprocess.run([sys.executable, str(WORKER), "--db-type", "supabase", "--db-file", str(tmp_path / "x.db")],
                            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "--db-type supabase needs" in result.stderr and "Refusing to fall back to SQLite" in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_tasks_cli_add_list_show_cancel_retry_stats(tmp_path):
    db = tmp_path / "tasks.db"
    params_file = tmp_path / "p.json"
    params_file.write_text(json.dumps({"message": "from file"}))
    first = tasks_cli(db, "add", "ping", f"@{params_file}", "--priority", "5", "--project-id", "proj").stdout.strip()
    second = tasks_cli(db, "add", "ping", '{"sleep_seconds": 0}', "--dependant-on", first).stdout.strip()
    assert len(first) == 36 and len(second) == 36

    shown = json.loads(tasks_cli(db, "show", first).stdout)
    assert shown["params"] == {"message": "from file"}
    assert (shown["priority"], shown["project_id"], shown["status"]) == (5, "proj", "Queued")
    assert json.loads(tasks_cli(db, "show", second).stdout)["dependant_on"] == first

    assert f"cancelled {second}" in tasks_cli(db, "cancel", second).stdout
    listed = [json.loads(line) for line in tasks_cli(db, "list", "--status", "Cancelled", "--json").stdout.splitlines()]
    assert [row["id"] for row in listed] == [second]
    assert f"requeued {second}" in tasks_cli(db, "retry", second).stdout

    assert run_worker(db, tmp_path / "out", "--once", "--worker", "cli-w").returncode == 0
    stats = json.loads(tasks_cli(db, "stats", "--json").stdout)
    assert stats["by_status"] == {"Complete": 2}
    assert stats["by_worker"] == {"cli-w": {"Complete": 2}}

    refused = tasks_cli(db, "cancel", first, check=False)
    assert refused.returncode == 1 and "is not Queued or In Progress" in refused.stderr
    bad = tasks_cli(db, "add", "ping", "[1]", check=False)
    assert bad.returncode == 2 and "params must be a JSON object" in bad.stderr


def test_tasks_workers_shows_live_dead_and_stopped_workers(tmp_path):
    import signal
    import time

    from source.db.models import NewTask
    from source.db.sqlite import SqliteTaskStore
    from tests.helpers import start_worker, wait_for

    db = tmp_path / "tasks.db"
    assert run_worker(db, tmp_path / "out", "--worker", "tidy-w", "--once").returncode == 0
    store = SqliteTaskStore(db)
    task_id = store.add_task(NewTask("ping", {"sleep_seconds": 30}))

    def workers(*flags: str) -> dict:
        lines = tasks_cli(db, "workers", "--json", *flags).stdout.splitlines()
        return {row["id"]: row for row in map(json.loads, lines)}

    live = start_worker(db, tmp_path / "out", "--worker", "busy-w", "--lease-seconds", "2")
    try:
        wait_for(lambda: workers().get("busy-w", {}).get("current_task_id") == task_id, timeout=30)
        listed = workers()
        assert listed["busy-w"]["alive"] and listed["busy-w"]["host"] and listed["busy-w"]["pid"] == live.pid
        assert listed["tidy-w"]["status"] == "stopped" and not listed["tidy-w"]["alive"]
        live.send_signal(signal.SIGKILL)
        live.wait(timeout=10)
        time.sleep(1.5)
        assert not workers("--alive-within", "1")["busy-w"]["alive"]
        text = tasks_cli(db, "workers", "--alive-within", "1").stdout
        assert "busy-w" in text and "DEAD" in text and "stopped" in text
    finally:
        if live.poll() is None:
            live.kill()


def test_flags_older_command_lines_pass_are_accepted_warned_when_unused_and_never_printed(tmp_path):
    # The anon key is used (with a personal access token); --queue-workers has nothing left to set.
    result = run_worker(tmp_path / "tasks.db", tmp_path / "out", "--once", "--supabase-anon-key", "anon-canary-1",
                        "--queue-workers", "4")
    assert result.returncode == 0, result.stderr
    assert "queue_workers_ignored" in result.stderr
    assert "anon-canary-1" not in result.stderr + result.stdout
