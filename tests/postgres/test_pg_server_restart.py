"""The whole Postgres server restarts mid-run (a throwaway cluster of our own, so no other test is
disturbed): the workers ride out the outage, reconnect, and every row ends Complete; a row runs twice
only when a claim's reply was lost with the server, and then through a counted, reclaimed attempt."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from source.db.models import TaskStatus
from source.db.postgres import PostgresTaskStore
from tests.helpers import log_events, ping_executions, run_worker, start_worker, wait_for
from tests.pg_fixtures import restart_cluster, throwaway_cluster, url_with_schema

pytestmark = pytest.mark.postgres


def test_workers_survive_a_server_restart_and_lose_nothing(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="wangp-pgrestart-"))  # not under tmp_path: the server runs as postgres
    out = tmp_path / "out"
    try:
        _run_through_a_restart(root, out, tmp_path)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_through_a_restart(root: Path, out: Path, tmp_path: Path) -> None:
    with throwaway_cluster(root) as admin_url:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA restart_run")
        url = url_with_schema(admin_url, "restart_run")
        store = PostgresTaskStore(url)
        store.migrate()
        with psycopg.connect(url, autocommit=True) as conn:
            ids = [row[0] for row in conn.execute(
                "INSERT INTO tasks (task_type, params) SELECT 'ping', jsonb_build_object('n', g, 'sleep_seconds', 0.02) "
                "FROM generate_series(1, 300) AS g RETURNING id").fetchall()]
        logs = [tmp_path / f"w{i}.log" for i in range(2)]
        workers = [start_worker(url, out, "--once", "--worker", f"rs{i}", "--lease-seconds", "3", log_path=logs[i])
                   for i in range(2)]
        try:
            wait_for(lambda: store.stats().by_status.get("Complete", 0) >= 60, timeout=90)
            restarted_at = time.monotonic()
            restart_cluster(root)
            assert store.stats().by_status.get("Queued", 0) > 0, "the restart must land mid-run"
            for proc in workers:
                assert proc.wait(timeout=180) == 0
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.kill()
        # rows whose claim reply was lost with the server come back when their lease ends
        if store.stats().by_status != {"Complete": 300}:
            time.sleep(3.5)
            assert run_worker(url, out, "--once", "--worker", "sweeper", "--lease-seconds", "3").returncode == 0
        assert store.stats().by_status == {"Complete": 300}
        for task_id in ids:
            runs = len(ping_executions(out, task_id))
            row = store.get_task(task_id)
            assert row.status is TaskStatus.COMPLETE and 1 <= runs <= row.attempts, (task_id, runs, row.attempts)
        store.close()
    events = [e["event"] for log in logs for e in log_events(log.read_text())]
    assert "postgres_unavailable" in events or "listen_connection_lost" in events
    assert time.monotonic() - restarted_at < 180
