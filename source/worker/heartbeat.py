"""The heartbeat thread that runs beside a task: extends its lease, flushes progress, and notices when
the row was cancelled or taken away."""

from __future__ import annotations

import threading
import time

import structlog

from source.db.models import TaskStatus
from source.db.store import TaskStore
from source.errors import CancelReason
from source.handlers.context import CancelSignal, ProgressState

log = structlog.get_logger(__name__)

# Write budget per running task: one statement per beat (lease + progress together), a beat every
# lease/4 and progress coalesced to at most one flush per PROGRESS_FLUSH_SECONDS (a flush is a beat):
# at most 60 / min(PROGRESS_FLUSH_SECONDS, lease/4) writes per minute, 12 at the default 60 s lease.
PROGRESS_FLUSH_SECONDS = 5.0
STATUS_CHECK_SECONDS = 0.25


class Heartbeat(threading.Thread):
    def __init__(
        self,
        store: TaskStore,
        task_id: str,
        worker_id: str,
        *,
        lease_seconds: float,
        interval: float,
        cancel: CancelSignal,
        progress: ProgressState,
        progress_flush_seconds: float = PROGRESS_FLUSH_SECONDS,
    ) -> None:
        super().__init__(name=f"heartbeat-{task_id}", daemon=True)
        self.store = store
        self.task_id = task_id
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.cancel = cancel
        self.progress = progress
        self.progress_flush_seconds = progress_flush_seconds
        self._stopped = threading.Event()
        self.beats = 0

    def stop(self) -> None:
        self._stopped.set()
        wake_waiters = getattr(self.store, "wake_waiters", None)  # Postgres: its wait checks stop every 0.1 s
        if wake_waiters is not None:
            wake_waiters()
        self.join(timeout=5)

    def run(self) -> None:
        next_beat = time.monotonic() + self.interval
        next_progress_flush = 0.0
        while not self._stopped.is_set():
            try:
                # Another connection's commit may be a cancel of this row: look at it right away.
                if self.store.wait_for_change(STATUS_CHECK_SECONDS, stop=self._stopped):
                    self._check_ownership()
                now = time.monotonic()
                update = self.progress.take_update() if now >= next_progress_flush else None
                progress, phase = update or (None, None)
                if progress is not None or now >= next_beat:
                    owned = self.store.heartbeat(
                        self.task_id, self.worker_id, lease_seconds=self.lease_seconds, progress=progress,
                        phase=phase,
                    )
                    self.beats += 1
                    next_beat = now + self.interval
                    if progress is not None:
                        next_progress_flush = now + self.progress_flush_seconds
                    if not owned:
                        self._check_ownership()
            except Exception as exc:  # a database hiccup must not kill the thread guarding the lease
                log.warning("heartbeat_failed", task_id=self.task_id, error=str(exc))
                self._stopped.wait(min(1.0, self.interval))

    def _check_ownership(self) -> None:
        state = self.store.task_status(self.task_id)
        if state is None:
            self.cancel.set(CancelReason.LEASE_LOST, "the task row was deleted")
            return
        status, owner = state
        if status is TaskStatus.CANCELLED:
            self.cancel.set(CancelReason.CANCELLED, "the task was cancelled")
        elif status is not TaskStatus.IN_PROGRESS or owner != self.worker_id:
            self.cancel.set(CancelReason.LEASE_LOST, f"the row is now {status.value} (worker {owner})")
