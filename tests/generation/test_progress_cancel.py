"""A long generation reports throttled progress to its row, stops at the next step when the row is
cancelled or its timeout passes, and the worker goes on with the next task."""

from __future__ import annotations

import threading
import time

from source.db.models import NewTask, TaskStatus
from source.worker.heartbeat import PROGRESS_FLUSH_SECONDS
from tests.generation.test_generation_tasks import run_worker_in_process

LONG = {"prompt": "a very long dance", "model": "tiny_t2v", "steps": 3000, "seed": 1}
SHORT = {"prompt": "a short one", "model": "tiny_t2v", "seed": 2}


def test_progress_reaches_the_row_throttled_and_cancel_stops_generation_mid_run(sqlite_store, tmp_path):
    long_id = sqlite_store.add_task(NewTask("t2v", LONG, priority=5))
    next_id = sqlite_store.add_task(NewTask("t2v", SHORT))
    seen: list[tuple[float, float]] = []

    def watch_then_cancel() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = sqlite_store.get_task(long_id)
            if row.progress:
                seen.append((time.monotonic(), row.progress))
            if len(seen) >= 1 and time.monotonic() - seen[0][0] > PROGRESS_FLUSH_SECONDS + 1.5:
                sqlite_store.cancel_task(long_id)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_then_cancel)
    watcher.start()
    started = time.monotonic()
    run_worker_in_process(sqlite_store, tmp_path / "out")
    watcher.join()

    cancelled, following = sqlite_store.get_task(long_id), sqlite_store.get_task(next_id)
    assert cancelled.status is TaskStatus.CANCELLED and cancelled.output_location is None
    assert following.status is TaskStatus.COMPLETE, following.error_message
    assert time.monotonic() - started < 40, "cancel must stop the 3000-step run, not wait for it"
    values = sorted({progress for _, progress in seen})
    assert 0 < values[0] < values[-1] < 1, "progress must climb while steps run"
    # ~50 steps/s are reported, but the row is written once per flush window (the write budget).
    assert len(values) <= 2 + (seen[-1][0] - seen[0][0]) / (0.9 * PROGRESS_FLUSH_SECONDS)


def test_generation_timeout_fails_the_task_and_the_worker_goes_on(sqlite_store, tmp_path):
    slow_id = sqlite_store.add_task(NewTask("t2v", {**LONG, "timeout_seconds": 1.5}, priority=5))
    next_id = sqlite_store.add_task(NewTask("t2v", SHORT))
    started = time.monotonic()
    run_worker_in_process(sqlite_store, tmp_path / "out")
    slow, following = sqlite_store.get_task(slow_id), sqlite_store.get_task(next_id)
    assert slow.status is TaskStatus.FAILED
    assert "timed out after 1.5 s" in slow.error_message
    assert following.status is TaskStatus.COMPLETE, following.error_message
    assert time.monotonic() - started < 40
