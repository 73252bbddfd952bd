"""Shared by the pickup-latency benchmarks: time rows from insert to claim, and a bare polling loop."""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from source.db.models import NewTask, TaskStatus
from source.db.store import TaskStore

ROOT = Path(__file__).resolve().parent.parent


def claim_delay_seconds(task) -> float:
    """created_at → generation_started_at, both from the database's clock."""
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return (parse(task.generation_started_at) - parse(task.created_at)).total_seconds()


def measure_pickup(store: TaskStore, rows: int, spacing: float) -> list[float]:
    """Insert ``rows`` ping rows one at a time, each at a random point within ``spacing`` seconds of the
    previous one finishing, and return each row's insert → claim delay."""
    latencies = []
    for _ in range(rows):
        task_id = store.add_task(NewTask("ping", {}))
        while (row := store.get_task(task_id)).status is TaskStatus.QUEUED:
            time.sleep(0.005)
        latencies.append(claim_delay_seconds(row))
        while store.get_task(task_id).status is not TaskStatus.COMPLETE:
            time.sleep(0.005)
        time.sleep(random.uniform(0.0, spacing))  # arrive at a random point of the poll cycle
    return latencies


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def bare_poller(open_store: Callable[[], TaskStore], interval: float, stop: threading.Event) -> None:
    """The alternative without wake-up: claim, and sleep ``interval`` whenever the queue is empty."""
    store = open_store()
    while not stop.is_set():
        task = store.claim_next_task("bare-poller", lease_seconds=60)
        if task is None:
            stop.wait(interval)
            continue
        store.complete_task(task.id, "bare-poller", output_location=None, result=None)
    store.close()


def measure_worker_pickup(store: TaskStore, database_args: Sequence[str], output_dir: str, rows: int) -> list[float]:
    """A real ``worker.py`` process (poll interval 10 s) on ``store``'s database, idle before each row."""
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "worker.py"), *database_args, "--main-output-dir", output_dir,
         "--poll-interval", "10", "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )
    try:
        time.sleep(3)  # imports done, worker idle
        return measure_pickup(store, rows, 0.3)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def measure_bare_pickup(store: TaskStore, open_store: Callable[[], TaskStore], rows: int,
                        interval: float) -> list[float]:
    """The same rows claimed by ``bare_poller`` (its own store from ``open_store``) polling every ``interval``."""
    stop = threading.Event()
    poller = threading.Thread(target=bare_poller, args=(open_store, interval, stop), daemon=True)
    poller.start()
    time.sleep(0.5)
    try:
        return measure_pickup(store, rows, interval)
    finally:
        stop.set()
        poller.join()


def report(ours_label: str, ours: list[float], bare: list[float], bare_interval: float) -> tuple[float, float]:
    """Print both distributions; returns their medians (ours, bare)."""
    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    print(f"{ours_label}: n={len(ours)} median={ours_median * 1000:.1f} ms "
          f"p95={p95(ours) * 1000:.1f} ms max={max(ours) * 1000:.1f} ms")
    print(f"bare polling loop (interval {bare_interval:g} s): n={len(bare)} median={bare_median * 1000:.1f} ms "
          f"p95={p95(bare) * 1000:.1f} ms")
    return ours_median, bare_median
