"""Shared test helpers: running real worker processes and waiting on conditions."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER = REPO_ROOT / "worker.py"


def worker_command(db: Path | str, output_dir: Path, *extra: str) -> list[str]:
    """``db``: a SQLite file (Path) or a Postgres URL/conninfo (str)."""
    store = ["--db-file", str(db)] if isinstance(db, Path) else ["--db-url", db]
    return [sys.executable, str(WORKER), *store, "--main-output-dir", str(output_dir), "--log-format", "json", *extra]


def _worker_env(env: dict[str, str] | None) -> dict[str, str]:
    # The tests choose the store explicitly: settings exported in the shell must not leak in.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "WORKER_DB"))}
    return {**base, "PYTHONUNBUFFERED": "1", **(env or {})}


def start_worker(db: Path | str, output_dir: Path, *extra: str, log_path: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    stderr: Any = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(worker_command(db, output_dir, *extra), cwd=REPO_ROOT, env=_worker_env(env),
                            stdout=subprocess.DEVNULL, stderr=stderr)


def run_workers_once(db: Path | str, output_dir: Path, count: int, name_prefix: str, *extra: str,
                     timeout: float = 120) -> None:
    """``count`` worker processes with ``--once`` side by side (each drains the queue, then exits); every one
    must exit 0 within ``timeout``, and none is left running whatever happens."""
    workers = [start_worker(db, output_dir, "--once", "--worker", f"{name_prefix}{i}", *extra) for i in range(count)]
    try:
        for proc in workers:
            assert proc.wait(timeout=timeout) == 0
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run_worker(db: Path | str, output_dir: Path, *extra: str, timeout: float = 120,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(worker_command(db, output_dir, *extra), cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, env=_worker_env(env))


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def log_events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
    return events


def ping_executions(output_dir: Path, task_id: str) -> list[dict[str, Any]]:
    from source.task_files.paths import task_output_name

    path = output_dir / task_output_name(task_id, "ping.json")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def http_server(handler: Callable[..., Any]) -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 with ``handler`` (a request handler class or factory);
    yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def generation_queue(output_dir: Path | str = "outputs", **engine_options: Any):
    """A fresh HeadlessTaskQueue(WanOrchestrator(...)), as worker.py builds it (``engine_options`` go to the
    Engine: e.g. ``step_hooks`` for fault injection)."""
    from headless_model_management import HeadlessTaskQueue
    from headless_wgp import WanOrchestrator
    from source.engine.core import Engine

    return HeadlessTaskQueue(WanOrchestrator(Path(output_dir).resolve(), engine=Engine(**engine_options)))


def in_process_worker(store, settings, queue=None, **options: Any):
    """A Worker wired like worker.py's: the generation queue reaches handlers through the task context."""
    from source.generation.handler import resident_affinity
    from source.worker.loop import Worker

    queue = queue if queue is not None else generation_queue(settings.main_output_dir)
    options.setdefault("models", getattr(queue.generator, "memory", None))
    return Worker(store, settings, generation=queue, affinity=lambda: resident_affinity(queue),
                  queue_stats=queue.stats.as_dict, **options)
