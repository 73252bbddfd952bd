"""SQLite task store: one db file shared by worker processes, WAL mode, cross-process atomic claims."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from uuid import uuid4

import structlog

from source.db.models import (
    AFFINITY_WINDOW_SECONDS,
    SUMMARY_PROMPT_CHARS,
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
    TaskRejected,
    TaskStatus,
    TaskSummary,
    UnrunnableTask,
    WorkerInfo,
    WorkerRecord,
    child_task_id,
)
from source.db.row_check import decode_text, shown
from source.db.sql_files import list_migrations, load_queries
from source.errors import TaskError

log = structlog.get_logger(__name__)

# How often an idle connection looks at PRAGMA data_version: the pickup latency floor.
CHANGE_CHECK_SECONDS = 0.02
MAX_CASCADE_ROUNDS = 10_000



class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced (the store's list of open connections must not keep one
    alive after its thread ended)."""


class _ClosedWithThread:
    """Kept in the thread-local slot beside its connection: when the thread ends its slot is dropped and this
    closes the connection (sqlite3's statement cache holds the connection in a reference cycle, so dropping the
    last reference alone leaves the file open until a garbage collection that may never come)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        with suppress(sqlite3.Error):
            self.conn.close()

class SqliteTaskStore:
    def __init__(self, path: str | Path, *, busy_timeout_seconds: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_seconds = busy_timeout_seconds
        self._local = threading.local()
        self._queries = load_queries("sqlite")
        self._all_connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()

    # -- connections ---------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_seconds, isolation_level=None, check_same_thread=False,
                factory=_Connection,
            )
            conn.row_factory = sqlite3.Row
            # A TEXT value that is not UTF-8 arrives as bytes, not as an error that aborts the statement.
            conn.text_factory = decode_text
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_seconds * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            self._local.closer = _ClosedWithThread(conn)
            self._local.data_version = None
            with self._connections_lock:
                self._all_connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the db's write lock up front, so a read-then-update is atomic
        across processes (no in-process lock involved)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def _q(self, name: str) -> str:
        return self._queries[name]

    # -- schema --------------------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        applied_now: list[str] = []
        with self._write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in list_migrations("sqlite"):
                if migration.version in done:
                    continue
                for statement in _split_statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) "
                    "VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                    (migration.version, migration.name),
                )
                applied_now.append(f"{migration.version:03d}_{migration.name}")
        if applied_now:
            log.info("migrations_applied", db=str(self.path), migrations=applied_now)
        return applied_now

    def schema_version(self) -> int:
        try:
            row = self._conn().execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        except sqlite3.OperationalError:
            return 0
        return int(row[0] or 0)

    # -- producer verbs ------------------------------------------------------------------------------
    def add_task(self, task: NewTask) -> str:
        task_id = task.id or str(uuid4())
        with _rejected_as(task_id), self._write() as conn:
            conn.execute(
                self._q("insert_task"),
                {
                    "id": task_id,
                    "task_type": task.task_type,
                    "params": task.params_text(),
                    "dependant_on": task.dependant_on,
                    "project_id": task.project_id,
                    "priority": task.priority,
                    "max_attempts": task.max_attempts,
                },
            )
        return task_id

    def get_task(self, task_id: str) -> Task | None:
        row = self._conn().execute(self._q("get_task"), {"id": task_id}).fetchone()
        return Task.from_row(row) if row else None

    def list_tasks(
        self, *, status: TaskStatus | None = None, task_type: str | None = None, limit: int = 100
    ) -> list[Task]:
        rows = self._conn().execute(
            self._q("list_tasks"),
            {"status": status.value if status else None, "task_type": task_type, "limit": limit},
        )
        return [Task.from_row(row) for row in rows]

    def list_task_summaries(self, *, status: TaskStatus | None = None, limit: int = 100) -> list[TaskSummary]:
        rows = self._conn().execute(self._q("list_task_summaries"), {
            "status": status.value if status else None, "limit": limit, "prompt_chars": SUMMARY_PROMPT_CHARS})
        return [TaskSummary.from_row(row) for row in rows]

    def cancel_task(self, task_id: str) -> bool:
        with self._write() as conn:
            cancelled = conn.execute(self._q("cancel_task"), {"id": task_id}).fetchone() is not None
            if cancelled:  # its unfinished children (and theirs) go with it, in the same transaction
                self._repeat(conn, "cancel_children_of_ended_parents")
        return cancelled

    # -- orchestration -------------------------------------------------------------------------------
    def add_child_tasks(self, parent_task_id: str, children: Sequence[NewTask]) -> list[str]:
        with self._write() as conn:
            parent = conn.execute(self._q("get_task"), {"id": parent_task_id}).fetchone()
            if parent is None:
                raise TaskError(f"parent task {parent_task_id} does not exist")
            ids = []
            for child in children:
                if not child.child_key:
                    raise ValueError("every child task needs a child_key (unique among its parent's children)")
                ids.append(child.id or child_task_id(parent_task_id, child.child_key))
                conn.execute(self._q("insert_child_task"), {  # in the parent's project, whatever the child says
                    "id": ids[-1], "task_type": child.task_type,
                    "params": child.params_text(), "dependant_on": child.dependant_on,
                    "project_id": parent["project_id"], "priority": child.priority, "max_attempts": child.max_attempts,
                    "parent_task_id": parent_task_id, "child_key": child.child_key,
                }).fetchall()
            taken = conn.execute(self._q("foreign_child_ids"), {
                "ids": json.dumps(ids), "parent_task_id": parent_task_id, "project_id": parent["project_id"]}).fetchone()
            if taken is not None:  # ids are derived from the parent's: another row may have been put there first
                raise TaskError(f"child id {taken['id']} is already taken by a row that is not that child of task "
                                f"{parent_task_id}; no child was created")
            existing = {row["child_key"]: row["id"] for row in
                        conn.execute(self._q("list_child_tasks"), {"parent_task_id": parent_task_id})}
        return [existing[child.child_key] for child in children]

    def list_child_tasks(self, parent_task_id: str) -> list[Task]:
        rows = self._conn().execute(self._q("list_child_tasks"), {"parent_task_id": parent_task_id})
        return [Task.from_row(row) for row in rows]

    def park_awaiting_children(self, task_id: str, worker_id: str, *, result: dict[str, Any] | None = None) -> bool:
        return self._update_one("park_awaiting_children", id=task_id, worker_id=worker_id,
                                result=_json_or_none(result))

    def complete_parent(
        self, task_id: str, *, output_location: str | None, result: dict[str, Any] | None
    ) -> bool:
        return self._update_one(
            "complete_parent", id=task_id, output_location=output_location, result=json.dumps(result or {}, default=str)
        )

    def retry_task(self, task_id: str) -> bool:
        with self._write() as conn:
            retried = conn.execute(self._q("retry_task"), {"id": task_id}).fetchone() is not None
            parents = [task_id] if retried else []
            while parents:  # and, in the same transaction, its ended children (and theirs)
                rows = conn.execute(self._q("retry_ended_children"), {"parent_task_id": parents.pop()}).fetchall()
                parents.extend(row["id"] for row in rows)
        return retried

    def retry_later(self, task_id: str, worker_id: str, *, error_message: str,
                    delay_seconds: float, error_in_output_location: bool = False) -> TaskStatus | None:
        with self._write() as conn:
            row = conn.execute(self._q("retry_later"), {
                "id": task_id, "worker_id": worker_id, "error_message": error_message,
                "delay_modifier": _seconds_modifier(delay_seconds),
                "error_in_output_location": int(error_in_output_location)}).fetchone()
        return TaskStatus(row["status"]) if row else None

    def purge_tasks(self, *, older_than_seconds: float, statuses: Sequence[TaskStatus],
                    dry_run: bool = False) -> list[PurgedTask]:
        params = {"age_modifier": _seconds_modifier(-older_than_seconds),
                  "statuses": json.dumps([TaskStatus(s).value for s in statuses])}
        with self._write() as conn:
            rows = conn.execute(self._q("purgeable_tasks" if dry_run else "purge_tasks"), params).fetchall()
        return [PurgedTask(row["id"], TaskStatus(row["status"]), row["output_location"]) for row in rows]

    def stats(self) -> QueueStats:
        conn = self._conn()
        by_status = {_as_text(row["status"]): row["n"] for row in conn.execute(self._q("count_by_status"))}
        by_worker: dict[str, dict[str, int]] = {}
        for row in conn.execute(self._q("count_by_worker")):
            by_worker.setdefault(row["worker_id"], {})[row["status"]] = row["n"]
        return QueueStats(by_status=by_status, by_worker=by_worker)

    def queued_kinds(self) -> list[QueuedKind]:
        return [QueuedKind.from_row(row) for row in self._conn().execute(self._q("count_queued_by_kind"))]

    # -- worker verbs --------------------------------------------------------------------------------
    def has_claimable_task(self, capabilities: Capabilities = UNRESTRICTED) -> bool:
        if capabilities.restricted:
            return self._pick(self._conn(), capabilities, {"resident_model": None, "resident_task_types": "[]",
                                                            "affinity_modifier": "+0 seconds"}) is not None
        return self._conn().execute(self._q("has_claimable_task")).fetchone() is not None

    def _pick(self, conn: sqlite3.Connection, capabilities: Capabilities, params: dict[str, Any]) -> int | None:
        """The rowid a worker with ``capabilities`` claims next (pick_capable_task), or None."""
        row = conn.execute(self._q("pick_capable_task"), {**params, **_capability_params(capabilities)}).fetchone()
        return None if row is None else int(row["row_number"])

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
        params = {
            "worker_id": worker_id,
            "lease_modifier": _seconds_modifier(lease_seconds),
            "affinity_modifier": _seconds_modifier(-affinity_window_seconds),
            "resident_model": resident_model,
            "resident_task_types": json.dumps(list(resident_task_types)),
            "picked_row": None,
        }
        while True:  # each pass takes one row; a row that cannot run is failed and the next one taken
            with self._write() as conn:
                conn.execute(self._q("release_due_rows"))
                if capabilities.restricted:
                    params["picked_row"] = self._pick(conn, capabilities, params)
                    if params["picked_row"] is None:
                        return None
                row = conn.execute(self._q("claim_next_task"), params).fetchone()
                if row is None:
                    return None
                task = Task.from_row(row)
                reason = task.unrunnable_reason()
                if reason is None:
                    return task
                # by rowid: a BLOB or undecodable id cannot be matched by its text
                conn.execute(self._q("fail_unrunnable_claim"), {"row_number": row["row_number"],
                                                                 "error_message": reason})
            log.warning("task_failed_at_claim", task_id=task.id, task_type=task.task_type, error=reason)

    def heartbeat(
        self, task_id: str, worker_id: str, *, lease_seconds: float, progress: float | None = None,
        phase: str | None = None,
    ) -> bool:
        return self._update_one(
            "heartbeat",
            id=task_id,
            worker_id=worker_id,
            lease_modifier=_seconds_modifier(lease_seconds),
            progress=progress,
            phase=phase,
        )

    def task_status(self, task_id: str) -> tuple[TaskStatus, str | None] | None:
        row = self._conn().execute(self._q("task_status"), {"id": task_id}).fetchone()
        return (TaskStatus(row["status"]), row["worker_id"]) if row else None

    def complete_task(
        self, task_id: str, worker_id: str, *, output_location: str | None, result: dict[str, Any] | None
    ) -> bool:
        return self._update_one(
            "complete_task",
            id=task_id,
            worker_id=worker_id,
            output_location=output_location,
            result=_json_or_none(result),
        )

    def fail_task(
        self, task_id: str, worker_id: str, *, error_message: str, result: dict[str, Any] | None = None,
        output_location: str | None = None,
    ) -> bool:
        """``output_location``: the older worker's error-in-output_location (--legacy-output-location)."""
        return self._update_one(
            "fail_task", id=task_id, worker_id=worker_id, error_message=error_message, result=_json_or_none(result),
            output_location=output_location,
        )

    def requeue_task(self, task_id: str, worker_id: str, *, free_requeues: int = 3) -> bool:
        return self._update_one("requeue_task", id=task_id, worker_id=worker_id, free_requeues=free_requeues)

    def reclaim_expired_leases(self) -> list[LeaseReclaim]:
        with self._write() as conn:
            rows = conn.execute(self._q("reclaim_expired_leases")).fetchall()
        return [LeaseReclaim(row["id"], TaskStatus(row["status"]), row["attempts"]) for row in rows]

    def housekeeping_turn(self, job: str, *, interval_seconds: float, worker_id: str) -> bool:
        with self._write() as conn:
            return conn.execute(self._q("housekeeping_turn"), {
                "job": job, "interval_seconds": float(interval_seconds), "worker_id": worker_id}).fetchone() is not None

    def fail_orphaned_dependants(self) -> list[CascadeFailure]:
        failed: list[CascadeFailure] = []
        with self._write() as conn:
            for _ in range(MAX_CASCADE_ROUNDS):
                rows = conn.execute(self._q("fail_orphaned_dependants")).fetchall()
                failed.extend(CascadeFailure(row["id"], row["dependant_on"]) for row in rows)
                parents = conn.execute(self._q("fail_parents_of_ended_children")).fetchall()
                failed.extend(CascadeFailure(row["id"], row["cause_id"], CascadeKind.CHILD) for row in parents)
                children = conn.execute(self._q("cancel_children_of_ended_parents")).fetchall()
                failed.extend(
                    CascadeFailure(row["id"], row["parent_task_id"], CascadeKind.PARENT) for row in children
                )
                if not (rows or parents or children):
                    break
        return failed

    def fail_unrunnable_tasks(self) -> list[UnrunnableTask]:
        failed: list[UnrunnableTask] = []
        with self._write() as conn:
            for query in ("fail_unknown_status", "fail_childless_parents", "fail_dependency_cycles"):
                failed.extend(UnrunnableTask(_as_text(row["id"]), row["reason"])
                              for row in conn.execute(self._q(query)).fetchall())
        return failed

    # -- worker registry -----------------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None:
        with self._write() as conn:
            conn.execute(self._q("register_worker"), {
                "id": info.id, "host": info.host, "pid": info.pid, "gpu_name": info.gpu_name,
                "gpu_memory_gb": info.gpu_memory_gb, "capabilities": json.dumps(info.capabilities.as_json()),
            })

    def touch_worker(
        self, worker_id: str, *, resident_model: str | None, current_task_id: str | None, status: str = "running",
        stats: dict[str, Any] | None = None,
    ) -> None:
        with self._write() as conn:
            conn.execute(self._q("touch_worker"), {
                "id": worker_id, "resident_model": resident_model, "current_task_id": current_task_id,
                "status": status, "stats": json.dumps(stats) if stats is not None else None,
            })

    def list_workers(self, *, alive_within_seconds: float) -> list[WorkerRecord]:
        rows = self._conn().execute(self._q("list_workers"),
                                    {"alive_modifier": _seconds_modifier(-alive_within_seconds)})
        return [WorkerRecord.from_row(row) for row in rows]

    # -- wake-up -------------------------------------------------------------------------------------
    def wait_for_change(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """PRAGMA data_version changes whenever another connection commits to the file: reading it is a
        cheap way for an idle worker to learn of a new row without claiming on every tick."""
        conn = self._conn()
        if self._local.data_version is None:
            self._local.data_version = _data_version(conn)
        deadline = time.monotonic() + timeout
        while True:
            current = _data_version(conn)
            if current != self._local.data_version:
                self._local.data_version = current
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if stop is not None:
                if stop.wait(min(CHANGE_CHECK_SECONDS, remaining)):
                    return False
            else:
                time.sleep(min(CHANGE_CHECK_SECONDS, remaining))

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._all_connections:
                with suppress(sqlite3.Error):
                    conn.close()
            self._all_connections.clear()
        self._local = threading.local()

    # -- helpers -------------------------------------------------------------------------------------
    def _repeat(self, conn: sqlite3.Connection, query: str) -> int:
        """Run a one-level cascade query until it changes nothing (a chain ends link by link)."""
        changed = 0
        for _ in range(MAX_CASCADE_ROUNDS):
            rows = conn.execute(self._q(query)).fetchall()
            if not rows:
                break
            changed += len(rows)
        return changed

    def errors_to_output_location(self, task_ids: Sequence[str]) -> int:
        if not task_ids:
            return 0
        with self._write() as conn:
            return len(conn.execute(self._q("errors_to_output_location"), {"ids": json.dumps(list(task_ids))}
                                    ).fetchall())

    def record_webhook_deliveries(self, task_id: str, worker_id: str, deliveries: Sequence[dict[str, Any]]) -> bool:
        return self._update_one("record_webhook_deliveries", id=task_id, worker_id=worker_id,
                                deliveries=json.dumps(list(deliveries)))

    def _update_one(self, query: str, **params: Any) -> bool:
        with self._write() as conn:
            return conn.execute(self._q(query), params).fetchone() is not None


@contextmanager
def _rejected_as(task_id: str) -> Iterator[None]:
    """The database refusing a row (a duplicate id, the id length trigger) as a TaskRejected with one line."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if "UNIQUE constraint failed: tasks.id" in str(exc):
            raise TaskRejected(f"task id {task_id} already exists") from None
        raise TaskRejected(str(exc)) from None


def _as_text(value: Any) -> str:
    """An id as text even when a producer stored bytes (shown escaped)."""
    return value if isinstance(value, str) else shown(bytes(value)) if isinstance(value, bytes) else str(value)


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _capability_params(capabilities: Capabilities) -> dict[str, str | None]:
    return {key: None if items is None else json.dumps(items) for key, items in capabilities.as_json().items()}


def _seconds_modifier(seconds: float) -> str:
    return f"{seconds:+.3f} seconds"


def _json_or_none(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def _split_statements(script: str) -> list[str]:
    """Split a migration into statements; sqlite3.complete_statement knows trigger bodies."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()
    ):
        raise ValueError(f"incomplete SQL statement at end of migration: {buffer.strip()[:80]}")
    return statements
