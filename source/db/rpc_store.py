"""The TaskStore verbs as calls of the SQL functions in ``sql/postgres/migrations``: shared by the direct
Postgres store (psycopg) and the Supabase API store (supabase-py rpc), which differ only in transport."""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol
from uuid import uuid4

import structlog

from source.db.models import (
    AFFINITY_WINDOW_SECONDS,
    NESTED_TOO_DEEPLY,
    UNRESTRICTED,
    Capabilities,
    CascadeFailure,
    CascadeKind,
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
    child_task_id,
)
from source.db.sql_files import list_migrations
from source.errors import TaskError

log = structlog.get_logger(__name__)

Row = dict[str, Any]


# The verbs a worker holding a personal access token may use: each has a user_<verb> SQL function (007)
# that checks the token and keeps to that user's projects.
TOKEN_FUNCTIONS = frozenset({
    "tasks_schema_version", "claim_next_task", "has_claimable_task", "tasks_change_marker", "heartbeat_task",
    "complete_task", "fail_task", "requeue_task", "task_status", "get_task", "reclaim_expired_leases",
    "fail_orphaned_dependants", "add_child_tasks", "list_child_tasks", "park_awaiting_children", "complete_parent",
    "register_worker", "touch_worker", "requeue_task_on_shutdown", "fail_unrunnable_tasks", "retry_later",
    # 025: the wake-one idle registry (011) and the fleet's housekeeping turns
    "worker_idle", "worker_busy", "worker_woken", "tasks_worker_channel", "tasks_housekeeping_turn",
    # 028: a claimed row the API's JSON could not carry; 029: --legacy-output-location for housekeeping
    "fail_undecodable_claim", "tasks_errors_to_output_location",
    # 050: webhook deliveries in a finished row's result
    "tasks_record_webhook_deliveries",
})

# "one": the dispatcher wakes one registered idle worker per claimable row (migration 011); "all": every idle
# worker looks at the table on every change (the design before 011).
WAKE_MODES = ("one", "all")
# An idle worker without LISTEN (transaction pooler, the Supabase API, --wake-mode poll) polls its own wake
# marker: quick after a change, backing off (with jitter, so a fleet's polls spread out) to this while
# nothing happens.
WAKE_POLL_MIN_SECONDS = 0.05
WAKE_POLL_MAX_SECONDS = 2.0


class WakeListener(Protocol):
    """What the idle wait needs of a LISTEN connection (pg_listener.ChangeListener)."""

    @property
    def connected(self) -> bool: ...

    @property
    def version(self) -> int: ...

    def wait_newer_than(self, seen: int, timeout: float, stop: threading.Event | None) -> int: ...


class IdleState:
    """Where this worker stands in the idle registry (one worker per store: the claim loop's thread)."""

    def __init__(self) -> None:
        self.channel: str | None = None
        self.registered = False
        self.renew_at = 0.0
        self.seen = 0
        self.marker: str | None = None
        self.poll = WAKE_POLL_MIN_SECONDS


def expected_schema_version() -> int:
    return max(m.version for m in list_migrations("postgres"))


def capability_params(capabilities: Capabilities) -> dict[str, list[str]]:
    """The claim functions' p_task_types, p_models, p_modelless_task_types (migration 023); none at all for an
    unrestricted worker, whose calls stay exactly what they were before."""
    if not capabilities.restricted:
        return {}
    return {f"p_{key}": items for key, items in capabilities.as_json().items()}  # type: ignore[misc]


class NotAllowedWithToken(PermissionError):
    """An operator verb (listing every task, cancelling, stats) asked of a store opened with a user's token."""


class RpcTaskStore(ABC):
    """Subclasses provide ``_rows`` (a set-returning function → rows) and ``_value`` (a scalar function), each
    calling ``_route`` first: with a personal access token every verb becomes its ``user_*`` function."""

    access_token: str | None = None
    wake: str = "one"
    _idle: IdleState

    def _route(self, function: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if self.access_token is None:
            return function, params
        if function not in TOKEN_FUNCTIONS:
            raise NotAllowedWithToken(f"{function} is not available to a worker using a personal access token "
                                      "(use the service-role key or a direct URL)")
        return f"user_{function}", {"p_token": self.access_token, **params}

    @abstractmethod
    def _rows(self, function: str, **params: Any) -> list[Row]: ...

    @abstractmethod
    def _value(self, function: str, **params: Any) -> Any: ...

    @abstractmethod
    def migrate(self) -> list[str]: ...

    @abstractmethod
    def check_schema(self) -> None:
        """Raise (SchemaOutdated, NoTasksTable, StoreUnavailable) unless the schema is what this code needs;
        never changes the database."""

    @abstractmethod
    def wait_for_change(self, timeout: float, stop: threading.Event | None = None) -> bool: ...

    @abstractmethod
    def close(self) -> None: ...

    def _row_to_task(self, row: Row) -> Task:
        return Task.from_row(row)

    def _flag(self, function: str, **params: Any) -> bool:
        return bool(self._value(function, **params))

    # -- producer verbs ------------------------------------------------------------------------------
    def add_task(self, task: NewTask) -> str:
        return str(self._value(
            "add_task", p_task_type=task.task_type, p_params=task.params, p_id=task.id or str(uuid4()),
            p_dependant_on=task.dependant_on, p_project_id=task.project_id, p_priority=task.priority,
            p_max_attempts=task.max_attempts,
        ))

    def get_task(self, task_id: str) -> Task | None:
        rows = self._rows("get_task", p_task_id=task_id)
        return self._row_to_task(rows[0]) if rows else None

    def list_tasks(
        self, *, status: TaskStatus | None = None, task_type: str | None = None, limit: int = 100
    ) -> list[Task]:
        rows = self._rows("list_tasks", p_status=status.value if status else None, p_task_type=task_type,
                          p_limit=limit)
        return [self._row_to_task(row) for row in rows]

    def list_task_summaries(self, *, status: TaskStatus | None = None, limit: int = 100) -> list[TaskSummary]:
        rows = self._rows("list_task_summaries", p_status=status.value if status else None, p_limit=limit)
        return [TaskSummary.from_row(row) for row in rows]

    def cancel_task(self, task_id: str) -> bool:
        return self._flag("cancel_task", p_task_id=task_id)

    def retry_task(self, task_id: str) -> bool:
        return self._flag("retry_task", p_task_id=task_id)

    def stats(self) -> QueueStats:
        by_status = {row["status"]: int(row["n"]) for row in self._rows("count_tasks_by_status")}
        by_worker: dict[str, dict[str, int]] = {}
        for row in self._rows("count_tasks_by_worker"):
            by_worker.setdefault(row["worker_id"], {})[row["status"]] = int(row["n"])
        return QueueStats(by_status=by_status, by_worker=by_worker)

    def queued_kinds(self) -> list[QueuedKind]:
        return [QueuedKind.from_row(row) for row in self._rows("count_queued_by_kind")]

    # -- worker verbs --------------------------------------------------------------------------------
    def has_claimable_task(self, capabilities: Capabilities = UNRESTRICTED) -> bool:
        return self._flag("has_claimable_task", **capability_params(capabilities))

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
        while True:  # each pass takes one row; a row that cannot run is failed and the next one taken
            try:
                rows = self._rows(
                    "claim_next_task", p_worker_id=worker_id, p_lease_seconds=float(lease_seconds),
                    p_resident_model=resident_model, p_resident_task_types=list(resident_task_types),
                    p_affinity_window_seconds=float(affinity_window_seconds), **capability_params(capabilities),
                )
            except RecursionError:  # the API's JSON answer nests too deeply for Python's parser (028)
                failed = self._value("fail_undecodable_claim", p_worker_id=worker_id,
                                     p_error_message=NESTED_TOO_DEEPLY)
                if failed is None:
                    raise
                log.warning("task_failed_at_claim", task_id=failed, error=NESTED_TOO_DEEPLY)
                continue
            if not rows:
                return None
            task = self._row_to_task(rows[0])
            reason = task.unrunnable_reason()
            if reason is None:
                self._leave_idle_set(worker_id)
                return task
            self.fail_task(task.id, worker_id, error_message=reason)
            log.warning("task_failed_at_claim", task_id=task.id, task_type=task.task_type, error=reason)

    # -- waiting for work (wake-one, migration 011; token workers through 025's user_* wrappers) ---------------
    def wait_for_work(self, worker_id: str, *, resident_model: str | None, timeout: float, poll_interval: float,
                      stop: threading.Event | None = None, capabilities: Capabilities = UNRESTRICTED) -> bool:
        """The claim loop's idle wait; True means claim now. Wake-one: (re)register as idle once per poll
        interval, which also answers whether a row is claimable (the fallback when a chosen worker died),
        then sleep until the dispatcher picks this worker: on its LISTEN channel, or polling its wake marker
        where there is none. Wake-all: any change, then a look at the table."""
        if self.wake == "all":
            return self.wait_for_change(timeout, stop) and self.has_claimable_task(capabilities)
        idle = self._idle
        listener = self._wake_listener(worker_id)
        now = time.monotonic()
        if not idle.registered or now >= idle.renew_at:
            seen_before = listener.version if listener is not None else 0
            claimable = self._flag("worker_idle", p_worker_id=worker_id, p_resident_model=resident_model,
                                   p_poll_seconds=float(poll_interval), **capability_params(capabilities))
            idle.registered, idle.renew_at = True, now + poll_interval
            idle.seen = seen_before if listener is not None else idle.seen
            idle.marker = ""  # worker_idle cleared woken_at: any marker but the empty one is a wake from now on
            if claimable:
                return True
        if listener is not None and listener.connected:
            now_version = listener.wait_newer_than(idle.seen, timeout, stop)
            woken = now_version > idle.seen
            idle.seen = now_version
        else:
            woken = self._poll_wake_marker(worker_id, timeout, stop)
        if woken:
            idle.renew_at = 0.0  # the dispatcher took us out of the idle set: back in if the claim finds nothing
        return woken

    def _wake_listener(self, worker_id: str) -> WakeListener | None:
        """This worker's LISTEN channel, where the store has one (direct Postgres)."""
        return None

    def _poll_wake_marker(self, worker_id: str, timeout: float, stop: threading.Event | None) -> bool:
        """No LISTEN: one primary-key read of this worker's wake marker per poll, jittered back-off between
        polls; never a claim."""
        idle = self._idle
        deadline = time.monotonic() + timeout
        while True:
            marker = str(self._value("worker_woken", p_worker_id=worker_id))
            if idle.marker is not None and marker != idle.marker:
                idle.marker, idle.poll = marker, WAKE_POLL_MIN_SECONDS
                return True
            idle.marker = marker
            idle.poll = min(idle.poll * 2, WAKE_POLL_MAX_SECONDS)
            pause = min(idle.poll * random.uniform(0.5, 1.0), deadline - time.monotonic())
            if pause <= 0 or (stop.wait(pause) if stop is not None else time.sleep(pause)):
                return False

    def _leave_idle_set(self, worker_id: str) -> None:
        if self._idle.registered:
            # leave the idle set so the dispatcher skips us while we work (a wake already took us out;
            # the statement is then a no-op, but a wake cannot be told from a reconnect or a cancel)
            self._idle.registered = False
            self._value("worker_busy", p_worker_id=worker_id)

    def heartbeat(
        self, task_id: str, worker_id: str, *, lease_seconds: float, progress: float | None = None,
        phase: str | None = None,
    ) -> bool:
        # p_phase only when there is one: a beat without it is the same call as before migration 021.
        extra = {"p_phase": phase} if phase is not None else {}
        return self._flag("heartbeat_task", p_task_id=task_id, p_worker_id=worker_id,
                          p_lease_seconds=float(lease_seconds),
                          p_progress=None if progress is None else float(progress), **extra)

    def task_status(self, task_id: str) -> tuple[TaskStatus, str | None] | None:
        rows = self._rows("task_status", p_task_id=task_id)
        return (TaskStatus(rows[0]["status"]), rows[0]["worker_id"]) if rows else None

    def complete_task(
        self, task_id: str, worker_id: str, *, output_location: str | None, result: dict[str, Any] | None
    ) -> bool:
        return self._flag("complete_task", p_task_id=task_id, p_worker_id=worker_id,
                          p_output_location=output_location, p_result=result)

    def fail_task(
        self, task_id: str, worker_id: str, *, error_message: str, result: dict[str, Any] | None = None,
        output_location: str | None = None,
    ) -> bool:
        # p_output_location (migration 024) only when there is one: without it, the same call as before.
        extra = {"p_output_location": output_location} if output_location is not None else {}
        return self._flag("fail_task", p_task_id=task_id, p_worker_id=worker_id, p_error_message=error_message,
                          p_result=result, **extra)

    def requeue_task(self, task_id: str, worker_id: str, *, free_requeues: int = 3) -> bool:
        return self._flag("requeue_task_on_shutdown", p_task_id=task_id, p_worker_id=worker_id,
                          p_free_requeues=free_requeues)

    def errors_to_output_location(self, task_ids: Sequence[str]) -> int:
        if not task_ids:
            return 0
        return int(self._value("tasks_errors_to_output_location", p_task_ids=list(task_ids)))

    def record_webhook_deliveries(self, task_id: str, worker_id: str, deliveries: Sequence[dict[str, Any]]) -> bool:
        return self._flag("tasks_record_webhook_deliveries", p_task_id=task_id, p_worker_id=worker_id,
                          p_deliveries=list(deliveries))

    def fail_unrunnable_tasks(self) -> list[UnrunnableTask]:
        return [UnrunnableTask(str(row["id"]), row["reason"]) for row in self._rows("fail_unrunnable_tasks")]

    def retry_later(self, task_id: str, worker_id: str, *, error_message: str,
                    delay_seconds: float, error_in_output_location: bool = False) -> TaskStatus | None:
        # p_error_in_output_location (migration 024) only when asked: without it, the same call as before.
        extra = {"p_error_in_output_location": True} if error_in_output_location else {}
        rows = self._rows("retry_later", p_task_id=task_id, p_worker_id=worker_id, p_error_message=error_message,
                          p_delay_seconds=float(delay_seconds), **extra)
        return TaskStatus(rows[0]["status"]) if rows else None

    def reclaim_expired_leases(self) -> list[LeaseReclaim]:
        return [LeaseReclaim(row["id"], TaskStatus(row["status"]), int(row["attempts"]))
                for row in self._rows("reclaim_expired_leases")]

    def purge_tasks(self, *, older_than_seconds: float, statuses: Sequence[TaskStatus],
                    dry_run: bool = False) -> list[PurgedTask]:
        rows = self._rows("purge_tasks", p_older_than_seconds=float(older_than_seconds),
                          p_statuses=[TaskStatus(s).value for s in statuses], p_dry_run=dry_run)
        return [PurgedTask(row["id"], TaskStatus(row["status"]), row["output_location"]) for row in rows]

    def housekeeping_turn(self, job: str, *, interval_seconds: float, worker_id: str) -> bool:
        return self._flag("tasks_housekeeping_turn", p_job=job, p_interval_seconds=float(interval_seconds),
                          p_worker_id=worker_id)

    def fail_orphaned_dependants(self) -> list[CascadeFailure]:
        return [CascadeFailure(row["id"], row["dependant_on"], CascadeKind(row["kind"]))
                for row in self._rows("fail_orphaned_dependants")]

    # -- orchestration -------------------------------------------------------------------------------
    def add_child_tasks(self, parent_task_id: str, children: Sequence[NewTask]) -> list[str]:
        payload = []
        for child in children:
            if not child.child_key:
                raise ValueError("every child task needs a child_key (unique among its parent's children)")
            payload.append({
                "id": child.id or child_task_id(parent_task_id, child.child_key), "child_key": child.child_key,
                "task_type": child.task_type, "params": child.params, "dependant_on": child.dependant_on,
                "project_id": child.project_id, "priority": child.priority, "max_attempts": child.max_attempts,
            })
        try:
            rows = self._rows("add_child_tasks", p_parent_task_id=parent_task_id, p_children={"children": payload})
        except Exception as exc:
            # 23505: a child's id is held by a row that is not that child (030): the orchestrator fails saying so
            if _sqlstate(exc) != "23505":
                raise
            raise TaskError(_server_message(exc)) from exc
        return [str(row["id"]) for row in rows]

    def list_child_tasks(self, parent_task_id: str) -> list[Task]:
        return [self._row_to_task(row) for row in self._rows("list_child_tasks", p_parent_task_id=parent_task_id)]

    def park_awaiting_children(self, task_id: str, worker_id: str, *, result: dict[str, Any] | None = None) -> bool:
        return self._flag("park_awaiting_children", p_task_id=task_id, p_worker_id=worker_id, p_result=result)

    def complete_parent(
        self, task_id: str, *, output_location: str | None, result: dict[str, Any] | None
    ) -> bool:
        return self._flag("complete_parent", p_task_id=task_id, p_output_location=output_location,
                          p_result=result or {})

    # -- worker registry -----------------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None:
        self._value("register_worker", p_id=info.id, p_host=info.host, p_pid=info.pid, p_gpu_name=info.gpu_name,
                    p_gpu_memory_gb=info.gpu_memory_gb, p_capabilities=info.capabilities.as_json())

    def touch_worker(
        self, worker_id: str, *, resident_model: str | None, current_task_id: str | None, status: str = "running",
        stats: dict[str, Any] | None = None,
    ) -> None:
        self._value("touch_worker", p_id=worker_id, p_resident_model=resident_model,
                    p_current_task_id=current_task_id, p_status=status, p_stats=stats)

    def list_workers(self, *, alive_within_seconds: float) -> list[WorkerRecord]:
        rows = self._rows("list_workers", p_alive_within_seconds=float(alive_within_seconds))
        return [WorkerRecord.from_row(row) for row in rows]


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a server error, over a direct connection (psycopg) or the API (PostgREST's code)."""
    return getattr(exc, "sqlstate", None) or getattr(exc, "code", None)


def _server_message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    return str(getattr(diag, "message_primary", None) or getattr(exc, "message", None) or exc)
