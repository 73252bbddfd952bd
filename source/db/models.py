"""Typed task rows: the status enum, the claimed ``Task`` and the ``NewTask`` a producer submits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from source.errors import InvalidParams

MAX_PARAMS_CHARS = 1_000_000


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

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Task:
        keys = set(row.keys())

        def get(name: str, default: Any = None) -> Any:
            return row[name] if name in keys else default

        params = get("params")
        if params is not None and not isinstance(params, str):
            params = json.dumps(params)  # Postgres jsonb arrives decoded
        result = get("result")
        if result is not None and not isinstance(result, str):
            result = json.dumps(result)
        return cls(
            id=str(row["id"]),
            task_type=row["task_type"],
            params_json=params,
            status=TaskStatus(row["status"]),
            dependant_on=get("dependant_on"),
            project_id=get("project_id"),
            priority=int(get("priority") or 0),
            attempts=int(get("attempts") or 0),
            max_attempts=int(get("max_attempts") or 3),
            worker_id=get("worker_id"),
            created_at=_text(get("created_at")),
            updated_at=_text(get("updated_at")),
            generation_started_at=_text(get("generation_started_at")),
            generation_processed_at=_text(get("generation_processed_at")),
            lease_expires_at=_text(get("lease_expires_at")),
            heartbeat_at=_text(get("heartbeat_at")),
            progress=get("progress"),
            progress_phase=get("progress_phase"),
            output_location=get("output_location"),
            error_message=get("error_message"),
            result_json=result,
            parent_task_id=get("parent_task_id"),
            child_key=get("child_key"),
            awaiting_children=bool(get("awaiting_children") or False),
        )

    def params(self) -> dict[str, Any]:
        """The params object, or InvalidParams saying precisely what is wrong with it."""
        if self.params_json is None or self.params_json.strip() == "":
            return {}
        if len(self.params_json) > MAX_PARAMS_CHARS:
            raise InvalidParams(f"params is {len(self.params_json)} characters; the limit is {MAX_PARAMS_CHARS}")
        try:
            value = json.loads(self.params_json)
        except json.JSONDecodeError as exc:
            raise InvalidParams(f"params is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise InvalidParams("params is nested too deeply to parse") from None
        if not isinstance(value, dict):
            raise InvalidParams(f"params must be a JSON object, got {_json_type_name(value)}")
        return value

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
    # Postgres timestamptz arrives as datetime: keep one ISO-8601 UTC form across backends.
    return value.isoformat().replace("+00:00", "Z")


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

    def params_text(self) -> str:
        return json.dumps(self.params, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class LeaseReclaim:
    """A row whose lease expired: back to Queued, or Failed once its attempts are used up."""

    task_id: str
    new_status: TaskStatus
    attempts: int


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
class QueueStats:
    by_status: dict[str, int]
    by_worker: dict[str, dict[str, int]]


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker says about itself when it starts."""

    id: str
    host: str | None = None
    pid: int | None = None
    gpu_name: str | None = None
    gpu_memory_gb: float | None = None


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

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> WorkerRecord:
        return cls(
            id=row["id"], host=row["host"], pid=row["pid"], gpu_name=row["gpu_name"],
            gpu_memory_gb=row["gpu_memory_gb"], resident_model=row["resident_model"],
            current_task_id=row["current_task_id"], status=row["status"],
            started_at=_text(row["started_at"]), last_heartbeat=_text(row["last_heartbeat"]), alive=bool(row["alive"]),
            stats=_json_object(row["stats"]),
        )
