"""What a handler receives (``TaskContext``) and returns (``TaskOutcome``)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from source.db.models import PHASES, Task, may_link
from source.db.store import TaskStore
from source.errors import CancelReason, TaskCancelled
from source.model_memory import ModelMemory
from source.task_files.paths import (
    inside_root,
    legacy_location_path,
    safe_filename,
    task_output_name,
    task_work_dir,
)
from source.task_files.policy import TaskInputs
from source.worker.settings import WorkerSettings


@dataclass(frozen=True)
class TaskOutcome:
    """A finished handler: the local output path (published by the worker) and structured extras.

    ``awaiting_children``: an orchestrator created child rows that will finish this row; the worker parks
    it (still In Progress, no lease) instead of completing it. ``completes_parent``: this child's published
    output also completes its parent row (the last step of an orchestrated workflow): the task's
    ``parent_task_id``, or ``parent_task_id`` here for a child without that link (an older-shape child names
    its older orchestrator in its params).
    """

    output_path: Path | None = None
    result: dict[str, Any] = field(default_factory=dict)
    awaiting_children: bool = False
    completes_parent: bool = False
    parent_task_id: str | None = None


class CancelSignal:
    """Set once, with the first reason that asked the running task to stop."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason: CancelReason | None = None
        self.detail = ""

    def set(self, reason: CancelReason | str, detail: str = "") -> None:
        with self._lock:
            if self.reason is None:
                self.reason, self.detail = CancelReason(reason), detail
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def raise_if_set(self) -> None:
        if self._event.is_set():
            raise TaskCancelled(self.reason or CancelReason.CANCELLED, self.detail)


class ProgressState:
    """Latest progress reported by a handler; the heartbeat thread flushes it, throttled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fraction: float | None = None
        self._flushed: tuple[float, str | None] | None = None
        self.message: str | None = None
        self.updated_at = 0.0

    def report(self, fraction: float, message: str | None = None) -> None:
        with self._lock:
            self._fraction = min(1.0, max(0.0, float(fraction)))
            self.message = message
            self.updated_at = time.monotonic()

    def latest(self) -> tuple[float | None, str | None]:
        """(fraction, message) as last reported, without taking it from the heartbeat's flush."""
        with self._lock:
            return self._fraction, self.message

    def take_update(self) -> tuple[float, str | None] | None:
        """(fraction, phase) when either changed since the last flush, else None. The phase is the
        message when it names one of PHASES (the engine reports "loading", "denoising", ...)."""
        with self._lock:
            phase = self.message if self.message in PHASES else None
            if self._fraction is None or (self._fraction, phase) == self._flushed:
                return None
            self._flushed = (self._fraction, phase)
            return self._flushed


@dataclass
class TaskContext:
    task: Task
    params: dict[str, Any]
    settings: WorkerSettings
    store: TaskStore
    # The worker's HeadlessTaskQueue (source/generation/handler.py's GenerationQueue), built by worker.py; None in a
    # worker that runs no generation.
    generation: Any = None
    # The auxiliary models (depth, pose, RIFE) this worker keeps beside its resident model (source/model_memory.py).
    models: ModelMemory = field(default_factory=ModelMemory)
    cancel: CancelSignal = field(default_factory=CancelSignal)
    progress: ProgressState = field(default_factory=ProgressState)
    log: Any = None

    def __post_init__(self) -> None:
        if self.log is None:
            self.log = structlog.get_logger("task").bind(
                task_id=self.task.id, task_type=self.task.task_type, worker_id=self.settings.worker_id
            )

    def check_cancelled(self) -> None:
        """A checkpoint: raises TaskCancelled when the row was cancelled, the worker is shutting down,
        the task timed out or its lease was lost."""
        self.cancel.raise_if_set()

    def report_progress(self, fraction: float, message: str | None = None) -> None:
        self.progress.report(fraction, message)

    @property
    def output_dir(self) -> Path:
        path = self.settings.main_output_dir.resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def output_path(self, suffix: str, *, subdir: str | None = None) -> Path:
        """A unique output file for this task: ``<output_dir>[/subdir]/<task stem>_<suffix>``."""
        parts = [safe_filename(subdir)] if subdir else []
        path = inside_root(self.output_dir, *parts, task_output_name(self.task.id, suffix))
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def output_of(self, location: str) -> str:
        """Another row's ``output_location`` as something ``resolve_input`` reads (the older ``files/<name>``
        form included, under --legacy-output-location)."""
        return legacy_location_path(location, self.settings.legacy_public_root)

    def linked_task(self, task_id: str | None) -> Task | None:
        """The row ``task_id`` names (a ``*_task_id`` input, a dependency, an orchestrator reference), only
        when this task may link to it (``may_link``: the same project): a row of another project reads as one
        that does not exist, so a link can neither reach another tenant's outputs nor tell whether it exists."""
        row = self.store.get_task(task_id) if task_id else None
        return row if row is not None and may_link(self.task, row) else None

    @property
    def work_dir(self) -> Path:
        """Scratch space for this task (downloads, intermediate frames) inside the output root."""
        return task_work_dir(self.output_dir, self.task.id)

    def scratch_record(self, name: str, path: Path) -> dict[str, str]:
        """``{name: path}`` for a row's ``result`` when the scratch file outlives the task (work folders kept,
        worker.py --debug); empty otherwise, so a result never points at a file that is deleted."""
        return {name: str(path)} if self.settings.keep_work_dirs else {}

    @property
    def inputs(self) -> TaskInputs:
        """What this task may read (the worker's input policy) and where its downloads go."""
        return TaskInputs(self.work_dir, self.settings.input_policy)
