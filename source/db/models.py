"""Typed task rows: the status enum, the claimed ``Task`` and the ``NewTask`` a producer submits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from source.db.row_check import MAX_TASK_ID_CHARS, RowReader, shown
from source.errors import InvalidParams

MAX_PARAMS_CHARS = 1_000_000
# params deeper than Python's JSON parser goes (about 1,000 levels)
NESTED_TOO_DEEPLY = "params is nested too deeply to parse"
# Both backends store priority and attempts as 32-bit integers (Postgres ``integer``).
INT32 = (-(2**31), 2**31 - 1)


class TaskRejected(ValueError):
    """A submitted task the store will not insert; the message says which field and why."""


class TaskStatus(str, Enum):
    QUEUED = "Queued"
    IN_PROGRESS = "In Progress"
    COMPLETE = "Complete"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.CANCELLED)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Task:
    """One row of the ``tasks`` table as the store returns it."""

    id: str
    task_type: str
    params_json: str | None
    status: TaskStatus
    dependant_on: str | None = None
    project_id: str | None = None
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 3
    worker_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    generation_started_at: str | None = None
    generation_processed_at: str | None = None
    lease_expires_at: str | None = None
    heartbeat_at: str | None = None
    progress: float | None = None
    output_location: str | None = None
    error_message: str | None = None
    result_json: str | None = None
    parent_task_id: str | None = None
    child_key: str | None = None
    awaiting_children: bool = False
    # What the running task is doing (PHASES), flushed with the progress.
    progress_phase: str | None = None

    # What is wrong with the row as stored (undecodable text, wrong column types): the claim fails it.
    problems: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Task:
        """Never raises on what a producer wrote: wrong values are read as harmless ones and listed in
        ``problems`` (see ``unrunnable_reason``)."""
        read = RowReader(row)
        task_id = read.task_id()
        task_type = read.text("task_type")
        if task_type is None:
            read.problems.append("task_type is NULL")
        params = read.raw("params")
        if params is None or isinstance(params, str):
            pass
        elif isinstance(params, dict | list | int | float | bool):
            params = json.dumps(params)  # a driver that decodes jsonb
        else:
            params = read.text("params")
        result = read.raw("result")
        if result is not None and not isinstance(result, str):
            result = json.dumps(result) if isinstance(result, dict | list) else read.text("result")
        raw_status = read.text("status")
        try:
            status = TaskStatus(raw_status)
        except ValueError:
            read.problems.append(f"status {raw_status!r} is not one of {', '.join(s.value for s in TaskStatus)}")
            status = TaskStatus.FAILED  # it can run no more than a Failed row can
        return cls(
            id=task_id,
            task_type=task_type or "",
            params_json=params,
            status=status,
            dependant_on=read.text("dependant_on"),
            project_id=read.text("project_id"),
            priority=read.integer("priority", 0),
            attempts=read.integer("attempts", 0),
            max_attempts=read.integer("max_attempts", 3),
            worker_id=read.text("worker_id"),
            created_at=_text(read.raw("created_at")),
            updated_at=_text(read.raw("updated_at")),
            generation_started_at=_text(read.raw("generation_started_at")),
            generation_processed_at=_text(read.raw("generation_processed_at")),
            lease_expires_at=_text(read.raw("lease_expires_at")),
            heartbeat_at=_text(read.raw("heartbeat_at")),
            progress=read.number("progress"),
            progress_phase=read.text("progress_phase"),
            output_location=read.text("output_location"),
            error_message=read.text("error_message"),
            result_json=result,
            parent_task_id=read.text("parent_task_id"),
            child_key=read.text("child_key"),
            awaiting_children=bool(read.raw("awaiting_children") or False),
            problems=tuple(read.problems),
        )

    def unrunnable_reason(self) -> str | None:
        """Why this claimed row cannot run at all (stored as its error_message), or None. Checked by the
        claim itself, so a broken row is failed at once and never reaches a handler."""
        if self.problems:
            return "the row cannot be read: " + "; ".join(self.problems)
        try:
            self.params()
        except InvalidParams as exc:
            return str(exc)
        return None

    def params(self) -> dict[str, Any]:
        """The params object, or InvalidParams saying precisely what is wrong with it."""
        if self.problems:
            raise InvalidParams("the row cannot be read: " + "; ".join(self.problems))
        if self.params_json is None or self.params_json.strip() == "":
            return {}
        if len(self.params_json) > MAX_PARAMS_CHARS:
            raise InvalidParams(f"params is {len(self.params_json)} characters; the limit is {MAX_PARAMS_CHARS}")
        try:
            value = json.loads(self.params_json)
        except json.JSONDecodeError as exc:
            raise InvalidParams(f"params is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise InvalidParams(NESTED_TOO_DEEPLY) from None
        if not isinstance(value, dict):
            raise InvalidParams(f"params must be a JSON object, got {_json_type_name(value)}")
        return value

    def as_json(self) -> dict[str, Any]:
        """The row as `tasks show`/`tasks list --json` and the web overview print it (params decoded when they
        can be; the text as stored when not)."""
        try:
            params: Any = self.params()
        except Exception:
            params = self.params_json
        return {
            "id": self.id, "task_type": self.task_type, "status": self.status.value, "params": params,
            "dependant_on": self.dependant_on, "project_id": self.project_id, "priority": self.priority,
            "attempts": self.attempts, "max_attempts": self.max_attempts, "worker_id": self.worker_id,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "generation_started_at": self.generation_started_at,
            "generation_processed_at": self.generation_processed_at, "lease_expires_at": self.lease_expires_at,
            "heartbeat_at": self.heartbeat_at, "progress": self.progress,
            "progress_phase": self.progress_phase, "output_location": self.output_location,
            "error_message": self.error_message, "result": self.result,
            "parent_task_id": self.parent_task_id, "child_key": self.child_key,
            "awaiting_children": self.awaiting_children,
            # what is wrong with the row as stored (undecodable text, wrong column types), if anything
            "row_problems": list(self.problems),
        }

    @property
    def result(self) -> dict[str, Any] | None:
        return _json_object(self.result_json)


def _json_object(text: Any) -> dict[str, Any] | None:
    """A JSON column as a dict (Postgres jsonb arrives decoded already); None when empty or broken."""
    if not text:
        return None
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else {"value": value}


def _json_type_name(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return shown(value)
    # Postgres timestamptz arrives as datetime: keep one ISO-8601 UTC form across backends.
    return value.isoformat().replace("+00:00", "Z")


# A list's prompt: the first characters only (the status page shows a line of it).
SUMMARY_PROMPT_CHARS = 200


@dataclass(frozen=True)
class TaskSummary:
    """A row as lists show it (the status page's overview): no params or result, which may hold a million
    characters each, and its prompt's first ``SUMMARY_PROMPT_CHARS`` characters, read by the database."""

    id: str
    task_type: str
    status: TaskStatus
    priority: int = 0
    progress: float | None = None
    worker_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    generation_started_at: str | None = None
    generation_processed_at: str | None = None
    output_location: str | None = None
    error_message: str | None = None
    parent_task_id: str | None = None
    prompt: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TaskSummary:
        read = RowReader(row)
        try:
            status = TaskStatus(read.text("status"))
        except ValueError:
            status = TaskStatus.FAILED  # as Task.from_row reads a status no worker knows
        return cls(
            id=read.task_id(), task_type=read.text("task_type") or "", status=status,
            priority=read.integer("priority", 0), progress=read.number("progress"), worker_id=read.text("worker_id"),
            created_at=_text(read.raw("created_at")), updated_at=_text(read.raw("updated_at")),
            generation_started_at=_text(read.raw("generation_started_at")),
            generation_processed_at=_text(read.raw("generation_processed_at")),
            output_location=read.text("output_location"), error_message=read.text("error_message"),
            parent_task_id=read.text("parent_task_id"), prompt=read.text("prompt"),
        )


@dataclass(frozen=True)
class NewTask:
    """What a producer submits."""

    task_type: str
    params: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    dependant_on: str | None = None
    priority: int = 0
    project_id: str | None = None
    max_attempts: int = 3
    # Set on children an orchestrator creates (add_child_tasks): unique among the parent's children.
    child_key: str | None = None

    def __post_init__(self) -> None:
        if self.id is not None and not (0 < len(self.id) <= MAX_TASK_ID_CHARS):
            raise TaskRejected(f"task id must be 1 to {MAX_TASK_ID_CHARS} characters, got {len(self.id)}")
        for name in ("priority", "max_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not INT32[0] <= value <= INT32[1]:
                raise TaskRejected(f"{name} must be an integer from {INT32[0]} to {INT32[1]}, got {value!r}")

    def params_text(self) -> str:
        return json.dumps(self.params, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class LeaseReclaim:
    """A row whose lease expired: back to Queued, or Failed once its attempts are used up."""

    task_id: str
    new_status: TaskStatus
    attempts: int


def may_link(row: Task, target: Task) -> bool:
    """Whether ``row`` may follow a link to ``target`` (its parent, its dependency, an input naming another
    row): a row of a project only within that project; a row without one (the service side's, trusted: the
    operator's CLI, the single-tenant queue) to any row."""
    return row.project_id is None or row.project_id == target.project_id


def child_task_id(parent_task_id: str, child_key: str) -> str:
    """The id of a parent's child: derived from (parent, key), so an orchestrator that runs again names the
    same rows (and can chain them by ``dependant_on``) before inserting them."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"task:{parent_task_id}/child:{child_key}"))


@dataclass(frozen=True)
class PurgedTask:
    """A row ``tasks purge`` deleted (or, in a dry run, would delete); its local files are the CLI's to remove."""

    task_id: str
    status: TaskStatus
    output_location: str | None


TERMINAL_STATUSES = ("Complete", "Failed", "Cancelled")
# The phases a running row's progress belongs to, in the order a generation goes through them.
PHASES = ("downloading", "loading", "denoising", "decoding", "encoding", "uploading")


class CascadeKind(str, Enum):
    DEPENDENCY = "dependency"  # a Queued row failed: the row it depends on ended Failed/Cancelled
    CHILD = "child"  # a parent failed: one of its children ended Failed/Cancelled
    PARENT = "parent"  # an unfinished child was cancelled: its parent ended Failed/Cancelled


@dataclass(frozen=True)
class CascadeFailure:
    """A row ended because of another: ``dependency_id`` names that row (the dependency, child or parent)."""

    task_id: str
    dependency_id: str
    kind: CascadeKind = CascadeKind.DEPENDENCY


@dataclass(frozen=True)
class UnrunnableTask:
    """A row the sweep failed because it could never run (a dependency cycle, an unknown status, ...)."""

    task_id: str
    reason: str


@dataclass(frozen=True)
class QueuedKind:
    """Queued rows of one task type and params.model (None: the row names no model)."""

    task_type: str
    model: str | None
    count: int
    oldest: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> QueuedKind:
        model = row["model"]
        return cls(str(row["task_type"]), None if model is None else str(model), int(row["n"]), _text(row["oldest"]))


@dataclass(frozen=True)
class QueueStats:
    by_status: dict[str, int]
    by_worker: dict[str, dict[str, int]]


@dataclass(frozen=True)
class Capabilities:
    """What a worker may claim, as concrete lists (None: no restriction). A row is claimable iff it names a
    ``params.model`` and both its task type and that model are allowed, or it names none and its task type is
    in ``modelless_task_types`` (a type whose default model is allowed, or one that needs no model). The
    worker builds it from --task-types/--models and its GPU (source/worker/capabilities.py); the claim, the
    idle registry and the stuck report all read these same three lists."""

    task_types: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    modelless_task_types: tuple[str, ...] | None = None

    @property
    def restricted(self) -> bool:
        return not (self.task_types is None and self.models is None and self.modelless_task_types is None)

    def accepts(self, task_type: str, model: str | None) -> bool:
        """The claim's rule, for one row (the SQL functions apply the same rule in the database)."""
        if model is None:
            return self.modelless_task_types is None or task_type in self.modelless_task_types
        return ((self.task_types is None or task_type in self.task_types)
                and (self.models is None or model in self.models))

    def as_json(self) -> dict[str, list[str] | None]:
        return {"task_types": _listed(self.task_types), "models": _listed(self.models),
                "modelless_task_types": _listed(self.modelless_task_types)}

    @classmethod
    def from_json(cls, value: Any) -> Capabilities:
        """From a workers row (a missing or broken value: unrestricted, what a worker of an earlier version is)."""
        if not isinstance(value, Mapping):
            return cls()

        def read(key: str) -> tuple[str, ...] | None:
            items = value.get(key)
            return tuple(str(item) for item in items) if isinstance(items, list) else None

        return cls(read("task_types"), read("models"), read("modelless_task_types"))


UNRESTRICTED = Capabilities()

# Within one priority, rows for the resident model go first unless an older row has waited this long (seconds):
# the claim's default in every store and the worker's --affinity-window default.
AFFINITY_WINDOW_SECONDS = 120.0


def _listed(items: tuple[str, ...] | None) -> list[str] | None:
    return None if items is None else list(items)


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker says about itself when it starts."""

    id: str
    host: str | None = None
    pid: int | None = None
    gpu_name: str | None = None
    gpu_memory_gb: float | None = None
    capabilities: Capabilities = UNRESTRICTED


# A running worker heard from within this many seconds counts as live (`tasks workers`, the web page, the stuck
# report); a worker touches its row at least every few seconds.
ALIVE_WITHIN_SECONDS = 120.0


@dataclass(frozen=True)
class WorkerRecord:
    """A row of the ``workers`` table; ``alive`` = running and heard from recently."""

    id: str
    host: str | None
    pid: int | None
    gpu_name: str | None
    gpu_memory_gb: float | None
    resident_model: str | None
    current_task_id: str | None
    status: str
    started_at: str | None
    last_heartbeat: str | None
    alive: bool
    stats: dict[str, Any] | None = None
    capabilities: Capabilities = UNRESTRICTED

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> WorkerRecord:
        return cls(
            id=row["id"], host=row["host"], pid=row["pid"], gpu_name=row["gpu_name"],
            gpu_memory_gb=row["gpu_memory_gb"], resident_model=row["resident_model"],
            current_task_id=row["current_task_id"], status=row["status"],
            started_at=_text(row["started_at"]), last_heartbeat=_text(row["last_heartbeat"]), alive=bool(row["alive"]),
            stats=_json_object(row["stats"]),
            capabilities=Capabilities.from_json(
                _json_object(row["capabilities"]) if "capabilities" in row.keys() else None),  # noqa: SIM118 (sqlite3.Row)
        )
