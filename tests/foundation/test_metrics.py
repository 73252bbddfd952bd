"""--metrics-port: Prometheus counters for claimed/finished tasks and a health check that notices a stuck loop."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

from source.db.models import NewTask, Task, TaskStatus
from source.worker.metrics import WorkerMetrics, serve_metrics
from tests.helpers import start_worker, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_worker_exposes_task_counters_queue_depth_and_health(sqlite_store, tmp_path):
    port = free_port()
    done = sqlite_store.add_task(NewTask("ping", {}))
    failed = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": "x"}))
    blocked = sqlite_store.add_task(NewTask("ping", {}, dependant_on="later"))
    proc = start_worker(sqlite_store.path, tmp_path / "out", "--metrics-port", str(port))
    try:
        wait_for(lambda: sqlite_store.get_task(failed).status is TaskStatus.FAILED, timeout=30)
        assert sqlite_store.get_task(done).status is TaskStatus.COMPLETE
        status, body = wait_for(lambda: (r := get(f"http://127.0.0.1:{port}/metrics"))[0] == 200 and r, timeout=10)
        assert 'worker_tasks_claimed_total{task_type="ping"} 2.0' in body
        assert 'worker_tasks_finished_total{status="Complete",task_type="ping"} 1.0' in body
        assert 'worker_tasks_finished_total{status="Failed",task_type="ping"} 1.0' in body
        assert "worker_queue_depth 1.0" in body  # the blocked row
        assert 'worker_task_seconds_count{task_type="ping"} 2.0' in body
        health = get(f"http://127.0.0.1:{port}/health")
        assert health[0] == 200 and health[1].startswith("ok")
        assert sqlite_store.get_task(blocked).status is TaskStatus.QUEUED
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_health_reports_unhealthy_when_the_loop_stops_ticking(sqlite_store):
    metrics = WorkerMetrics(sqlite_store, stuck_after_seconds=0.2)
    server = serve_metrics(metrics, "127.0.0.1", free_port())
    try:
        url = f"http://127.0.0.1:{server.server_port}/health"
        metrics.loop_tick()
        assert get(url)[0] == 200
        time.sleep(0.3)
        code, body = get(url)
        assert code == 503 and body.startswith("stuck")
        metrics.task_claimed(Task(id="t", task_type="flux", params_json="{}", status=TaskStatus.IN_PROGRESS))
        assert 'worker_tasks_claimed_total{task_type="flux"} 1.0' in get(f"http://127.0.0.1:{server.server_port}/metrics")[1]
    finally:
        server.shutdown()
