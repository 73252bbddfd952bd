"""Submit and wait: ``tasks add --wait`` (RunPod's runsync, Replicate's ``Prefer: wait``) waits here until the
row is Complete, Failed or Cancelled, or the time runs out."""

from __future__ import annotations

import time

from source.db import TaskStore
from source.db.models import Task

# Postgres notifies a row becoming claimable or cancelled, not its completion: look at the row at least this
# often (SQLite's data_version wakes the wait on every commit).
POLL_SECONDS = 0.5


def wait_until_finished(store: TaskStore, task_id: str, timeout: float | None) -> Task | None:
    """The row once it is finished, or as it stands when ``timeout`` seconds (None: no limit) have passed;
    None when there is no such row."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        task = store.get_task(task_id)
        if task is None or task.status.is_final:
            return task
        left = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
        if left <= 0:
            return task
        store.wait_for_change(left)
