"""The queue as the status page shows it: counts, pickup latency, throughput, workers, recent rows."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any

from source.db import Task, TaskStatus, TaskStore
from source.db.models import ALIVE_WITHIN_SECONDS, TaskSummary

RECENT_ROWS = 500  # rows read per refresh for the hour's metrics; the page lists the newest of them
ACTIVE_ROWS = 1000  # Queued and In Progress rows counted by task type (a deeper queue shows as 1000+)
SHOWN_ROWS = 50


def task_json(task: Task) -> dict[str, Any]:
    """One row as the API returns it: the same shape as ``tasks show``."""
    return task.as_json()


def task_summary(task: TaskSummary) -> dict[str, Any]:
    """A row as the live page lists it: no params or result (they can be large), the prompt shortened."""
    return {
        "id": task.id, "task_type": task.task_type, "status": task.status.value, "priority": task.priority,
        "progress": task.progress, "worker_id": task.worker_id, "created_at": task.created_at,
        "generation_started_at": task.generation_started_at,
        "generation_processed_at": task.generation_processed_at, "output_location": task.output_location,
        "error_message": task.error_message, "parent_task_id": task.parent_task_id,
        "prompt": task.prompt,  # its first SUMMARY_PROMPT_CHARS characters
    }


def read_overview(store: TaskStore, *, now: datetime | None = None) -> dict[str, Any]:
    """Everything the page's summary needs, in a fixed number of store calls (whatever the number of viewers)."""
    now = now or datetime.now(timezone.utc)
    stats = store.stats()
    # summaries: the store reads no params or result (a row may hold a million characters of them)
    recent = store.list_task_summaries(limit=RECENT_ROWS)
    queued = store.list_task_summaries(status=TaskStatus.QUEUED, limit=ACTIVE_ROWS)
    running = store.list_task_summaries(status=TaskStatus.IN_PROGRESS, limit=ACTIVE_ROWS)
    by_type: dict[str, Counter[str]] = {}
    for task in (*queued, *running):
        by_type.setdefault(task.task_type, Counter())[task.status.value] += 1
    return {
        "by_status": {s.value: stats.by_status.get(s.value, 0) for s in TaskStatus},
        "active_by_type": {k: dict(v) for k, v in sorted(by_type.items())},
        "last_hour": hour_metrics(recent, now),
        "workers": [asdict(w) for w in store.list_workers(alive_within_seconds=ALIVE_WITHIN_SECONDS)],
        # The rows workers run now (their progress bars), whatever their age.
        "running": [task_summary(t) for t in running[:SHOWN_ROWS]],
        "tasks": [task_summary(t) for t in recent[:SHOWN_ROWS]],
    }


def hour_metrics(tasks: list[TaskSummary], now: datetime) -> dict[str, Any]:
    """Pickup latency (created → generation started) and finished rows over the last hour, from the newest
    ``RECENT_ROWS`` rows (``sampled_rows`` says how many of them fell in the hour)."""
    since = now - timedelta(hours=1)
    pickups, finished = [], Counter()
    sampled = 0
    for task in tasks:
        created = parse_time(task.created_at)
        if created is None or created < since:
            continue
        sampled += 1
        started = parse_time(task.generation_started_at)
        if started is not None:
            pickups.append(max((started - created).total_seconds(), 0.0))
        if task.status.is_final and parse_time(task.generation_processed_at or task.updated_at):
            finished[task.status.value] += 1
    return {
        "sampled_rows": sampled,
        "pickup_p50_s": _quantile(pickups, 0.5),
        "pickup_p90_s": _quantile(pickups, 0.9),
        "finished": dict(finished),
        "completed_per_hour": finished.get(TaskStatus.COMPLETE.value, 0),
    }


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1], 3)
