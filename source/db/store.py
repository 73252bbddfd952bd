"""The ``TaskStore`` protocol: the database verbs the worker and the task CLI use, on any backend."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from source.db.models import (
    AFFINITY_WINDOW_SECONDS,
    UNRESTRICTED,
    Capabilities,
    CascadeFailure,
    LeaseReclaim,
    NewTask,
    PurgedTask,
    QueuedKind,
    QueueStats,
    Task,
    TaskStatus,
    TaskSummary,
    UnrunnableTask,
    WorkerInfo,
    WorkerRecord,
)


class TaskStore(Protocol):
    """Every method is safe to call from several threads of one process and from many processes."""

    def migrate(self) -> list[str]:
        """Apply pending numbered migrations; return the names applied."""

    def add_task(self, task: NewTask) -> str:
        """Insert a Queued row; return its id."""

    def get_task(self, task_id: str) -> Task | None: ...

    def list_tasks(
        self, *, status: TaskStatus | None = None, task_type: str | None = None, limit: int = 100
    ) -> list[Task]: ...

    def list_task_summaries(self, *, status: TaskStatus | None = None, limit: int = 100) -> list[TaskSummary]:
        """Newest first, as ``list_tasks``, without params or result (the database reads the prompt's start)."""

    def claim_next_task(
        self,
        worker_id: str,
        *,
        lease_seconds: float,
        resident_model: str | None = None,
        resident_task_types: tuple[str, ...] = (),
        affinity_window_seconds: float = AFFINITY_WINDOW_SECONDS,
        capabilities: Capabilities = UNRESTRICTED,
    ) -> Task | None:
        """Atomically take the next claimable row (priority, age, dependencies, model affinity) among those
        ``capabilities`` allow; their cost does not grow with the rows they exclude (index probes per group)."""

    def has_claimable_task(self, capabilities: Capabilities = UNRESTRICTED) -> bool:
        """Cheap read-only check used before a claim when the worker is woken up."""

    def heartbeat(
        self, task_id: str, worker_id: str, *, lease_seconds: float, progress: float | None = None,
        phase: str | None = None,
    ) -> bool:
        """Extend the lease (and store progress and its phase, when given); False when the row is no longer
        this worker's."""

    def task_status(self, task_id: str) -> tuple[TaskStatus, str | None] | None:
        """(status, worker_id) of a row, without writing."""

    def complete_task(
        self, task_id: str, worker_id: str, *, output_location: str | None, result: dict[str, Any] | None
    ) -> bool:
        """Mark Complete; refused (False) if the worker no longer holds the row."""

    def fail_task(
        self, task_id: str, worker_id: str, *, error_message: str, result: dict[str, Any] | None = None,
        output_location: str | None = None,
    ) -> bool:
        """Mark Failed with ``error_message``; refused (False) if the worker no longer holds the row.
        ``output_location``: also written there (--legacy-output-location: the older worker's frontends read
        a failed row's error text from that column); None leaves the column as it is."""

    def retry_later(self, task_id: str, worker_id: str, *, error_message: str,
                    delay_seconds: float, error_in_output_location: bool = False) -> TaskStatus | None:
        """A transient failure: Queued again, claimable after ``delay_seconds`` (``run_after``), or Failed once
        its max_attempts are used (the error then also in ``output_location`` when
        ``error_in_output_location``: --legacy-output-location). None when the row is no longer this worker's."""

    def requeue_task(self, task_id: str, worker_id: str, *, free_requeues: int = 3) -> bool:
        """Give a row back (graceful shutdown): Queued again, the attempt not counted for the row's first
        ``free_requeues`` shutdowns; after that it counts, and a row whose attempts are used up ends Failed
        (a row that always hangs until its worker is stopped cannot cycle forever)."""

    def cancel_task(self, task_id: str) -> bool:
        """Queued/In Progress → Cancelled; its unfinished children (transitively) are cancelled with it."""

    def retry_task(self, task_id: str) -> bool:
        """Failed/Cancelled → Queued with attempts reset; its Failed/Cancelled children (transitively) too,
        in the same transaction, so a retried orchestrator resumes its chain (Complete children are kept)."""

    def reclaim_expired_leases(self) -> list[LeaseReclaim]: ...

    def purge_tasks(self, *, older_than_seconds: float, statuses: Sequence[TaskStatus],
                    dry_run: bool = False) -> list[PurgedTask]:
        """Delete rows in ``statuses`` (ended ones only) last changed more than ``older_than_seconds`` ago,
        except a row that an unfinished row still needs (its dependency or parent). ``dry_run``: only list."""

    def housekeeping_turn(self, job: str, *, interval_seconds: float, worker_id: str) -> bool:
        """Whether this worker does housekeeping ``job`` now: true for one caller per ``interval_seconds``
        across every worker on the store, so a fleet does each job about once per interval in all."""

    def fail_orphaned_dependants(self) -> list[CascadeFailure]:
        """The failure cascade, repeated until nothing changes: Queued rows whose dependency ended
        Failed/Cancelled fail; an In Progress parent with a Failed/Cancelled child fails (naming the child
        that ended first); unfinished children of a Failed/Cancelled parent are cancelled."""

    def fail_unrunnable_tasks(self) -> list[UnrunnableTask]:
        """The periodic sweep of rows that can never run, each failed with its reason: a status no worker
        looks for, a dependency cycle (``dependency cycle: a → b → a``), awaiting children it does not have,
        a dependency that is not text. Rows behind them then fail by ``fail_orphaned_dependants``."""

    def errors_to_output_location(self, task_ids: Sequence[str]) -> int:
        """--legacy-output-location for rows housekeeping failed (a cascade, used-up leases, the sweep): the
        Failed ones among ``task_ids`` get their error_message in output_location too, where frontends written
        for the older worker read it. Returns how many rows changed."""

    def record_webhook_deliveries(self, task_id: str, worker_id: str, deliveries: Sequence[dict[str, Any]]) -> bool:
        """``result.webhooks`` of a finished row (Complete, Failed, Cancelled) that ``worker_id`` ran: what each
        webhook delivery of its last attempt came to. False when the row is not that (run again elsewhere)."""

    # -- orchestration: a parent row creates children, parks, and is finished by them ---------------
    def add_child_tasks(self, parent_task_id: str, children: Sequence[NewTask]) -> list[str]:
        """Insert Queued children of ``parent_task_id`` in one transaction and return their ids, in order.
        Each child needs a ``child_key``; its id defaults to ``child_task_id(parent, key)``. A child whose
        (parent, key) already exists is left unchanged (unique index), so re-running is idempotent."""

    def list_child_tasks(self, parent_task_id: str) -> list[Task]:
        """The parent's children, oldest first."""

    def park_awaiting_children(self, task_id: str, worker_id: str, *, result: dict[str, Any] | None = None) -> bool:
        """Leave this worker's In Progress row waiting for its children (storing ``result``): no lease,
        never reclaimed. False when the row is no longer In Progress (its children finished or failed it)."""

    def complete_parent(
        self, task_id: str, *, output_location: str | None, result: dict[str, Any] | None
    ) -> bool:
        """A child (any worker) completes its In Progress parent with the final output; ``result`` is merged
        over the parent's own (JSON object merge)."""

    def stats(self) -> QueueStats: ...

    def queued_kinds(self) -> list[QueuedKind]:
        """Queued rows counted by (task type, params.model): what `tasks stats` holds against the live workers'
        capabilities to report rows nobody can run."""

    def wait_for_change(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Block until another connection changes the table (True) or ``timeout`` passes (False)."""

    def register_worker(self, info: WorkerInfo) -> None:
        """Insert or refresh this worker's row in the ``workers`` table (status running)."""

    def touch_worker(
        self, worker_id: str, *, resident_model: str | None, current_task_id: str | None, status: str = "running",
        stats: dict[str, Any] | None = None,
    ) -> None:
        """Heartbeat of the worker itself: what it holds and runs now, and its queue statistics (kept
        when ``stats`` is None)."""

    def list_workers(self, *, alive_within_seconds: float) -> list[WorkerRecord]: ...

    def close(self) -> None: ...
