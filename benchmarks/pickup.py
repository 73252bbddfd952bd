"""Shared by the pickup-latency benchmarks: time rows from insert to claim, and a bare polling loop."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import datetime

from source.db.models import NewTask, TaskStatus
from source.db.store import TaskStore


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
