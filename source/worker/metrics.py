"""Prometheus metrics and a health endpoint for one worker (``--metrics-port``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from source.db.models import Task, TaskStatus
from source.db.store import TaskStore
from source.worker.loop import WorkerObserver

GENERATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 3600)


class WorkerMetrics(WorkerObserver):
    def __init__(self, store: TaskStore, *, stuck_after_seconds: float, model_switches: Callable[[], int] | None = None):
        self.registry = CollectorRegistry()
        self.stuck_after_seconds = stuck_after_seconds
        self._last_tick = time.monotonic()
        self.claimed = Counter("worker_tasks_claimed", "Tasks claimed", ["task_type"], registry=self.registry)
        self.finished = Counter("worker_tasks_finished", "Tasks finished by final status",
                                ["task_type", "status"], registry=self.registry)
        self.seconds = Histogram("worker_task_seconds", "Handler wall time of finished tasks", ["task_type"],
                                 buckets=GENERATION_BUCKETS, registry=self.registry)
        queue_depth = Gauge("worker_queue_depth", "Queued rows in the shared table", registry=self.registry)
        queue_depth.set_function(lambda: _queued_rows(store))
        switches = Gauge("worker_model_switches", "Model switches in this process", registry=self.registry)
        switches.set_function(lambda: model_switches() if model_switches else 0)
        loop_age = Gauge("worker_loop_last_tick_seconds", "Seconds since the loop last ticked", registry=self.registry)
        loop_age.set_function(self.seconds_since_tick)

    # -- observer ------------------------------------------------------------------------------------
    def loop_tick(self) -> None:
        self._last_tick = time.monotonic()

    def task_claimed(self, task: Task) -> None:
        self.claimed.labels(task.task_type).inc()

    def task_finished(self, task: Task, status: str, seconds: float | None) -> None:
        self.finished.labels(task.task_type, status).inc()
        if seconds is not None:
            self.seconds.labels(task.task_type).observe(seconds)

    # -- health --------------------------------------------------------------------------------------
    def seconds_since_tick(self) -> float:
        return time.monotonic() - self._last_tick

    def healthy(self) -> bool:
        return self.seconds_since_tick() < self.stuck_after_seconds

    def wsgi_app(self) -> Callable[..., Any]:
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            if environ.get("PATH_INFO") == "/health":
                age = self.seconds_since_tick()
                if self.healthy():
                    start_response("200 OK", [("Content-Type", "text/plain")])
                    return [f"ok: loop ticked {age:.1f} s ago\n".encode()]
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [f"stuck: loop has not ticked for {age:.1f} s\n".encode()]
            return metrics_app(environ, start_response)

        return app


def _queued_rows(store: TaskStore) -> float:
    """Queued rows in the shared table; NaN where this worker may not count them (a personal access token
    sees only its user's rows through the user_* functions, and there is no count among them)."""
    try:
        return store.stats().by_status.get(TaskStatus.QUEUED.value, 0)
    except PermissionError:
        return float("nan")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line each
        pass


def serve_metrics(metrics: WorkerMetrics, host: str, port: int) -> WSGIServer:
    server = make_server(host, port, metrics.wsgi_app(), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
