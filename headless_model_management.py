"""HeadlessTaskQueue: a priority queue of generation tasks that keeps one model resident and switches
models only when a task needs another one."""

from __future__ import annotations

import contextvars
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import structlog

from source.errors import OutOfMemory, TaskCancelled, TaskError
from source.task_conversion import GenerationTask

log = structlog.get_logger(__name__)


class Generator(Protocol):
    """What the queue needs from the layer below (WanOrchestrator)."""

    current_model: str | None

    def load_model(self, model_type: str) -> bool: ...

    def unload_model(self) -> None: ...

    def run_task(self, task: GenerationTask, *, progress: Callable[[int, int, str], None] | None,
                 should_abort: Callable[[], bool]) -> Any: ...


class QueuedState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class _Entry:
    task: GenerationTask
    progress: Callable[[int, int, str], None] | None
    should_abort: Callable[[], bool] | None
    state: QueuedState = QueuedState.QUEUED
    result: Any = None
    error: BaseException | None = None
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.monotonic)
    # The submitter's log context (task_id, worker_id): library log lines from the generation carry it.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


@dataclass
class QueueStatistics:
    tasks_submitted: int = 0
    tasks_completed: int = 0
    tasks_failed: int = 0
    tasks_cancelled: int = 0
    model_switches: int = 0
    model_loads: int = 0
    total_generation_time: float = 0.0
    load_time_by_model: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "load_time_by_model": dict(self.load_time_by_model)}


class HeadlessTaskQueue:
    def __init__(self, generator: Generator, *, workers: int = 1) -> None:
        self.generator = generator
        self.workers = workers
        self.stats = QueueStatistics()
        self._heap: list[tuple[int, int, str]] = []
        self._entries: dict[str, _Entry] = {}
        self._sequence = itertools.count()
        self._cond = threading.Condition()
        # One accelerator: generation (and model switching) is serialised even with several queue
        # threads; the threads overlap input preparation and bookkeeping only.
        self._model_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> HeadlessTaskQueue:
        if not self._threads:
            for index in range(self.workers):
                thread = threading.Thread(target=self._serve, name=f"generation-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    @property
    def resident_model(self) -> str | None:
        return self.generator.current_model

    # -- producer side -------------------------------------------------------------------------------
    def submit(self, task: GenerationTask, *, progress: Callable[[int, int, str], None] | None = None,
               should_abort: Callable[[], bool] | None = None) -> str:
        with self._cond:
            if task.id in self._entries and not self._entries[task.id].done.is_set():
                raise TaskError(f"generation task {task.id} is already queued")
            self._entries[task.id] = _Entry(task, progress, should_abort)
            heapq.heappush(self._heap, (-task.priority, next(self._sequence), task.id))
            self.stats.tasks_submitted += 1
            self._cond.notify()
        log.debug("generation_submitted", task_id=task.id, model=task.model, queue_depth=len(self._heap))
        return task.id

    def status(self, task_id: str) -> QueuedState | None:
        entry = self._entries.get(task_id)
        return entry.state if entry else None

    def cancel(self, task_id: str) -> bool:
        entry = self._entries.get(task_id)
        if entry is None or entry.done.is_set():
            return False
        entry.cancelled = True
        with self._cond:
            self._cond.notify_all()
        return True

    def wait(self, task_id: str, timeout: float | None = None) -> Any:
        """The generator's result, or the task's exception re-raised. On timeout the task is stopped
        at its next step and fails with a TaskError naming the limit."""
        entry = self._entries[task_id]
        if not entry.done.wait(timeout):
            entry.cancelled = True
            entry.done.wait()
            if entry.state is QueuedState.CANCELLED:
                raise TaskError(f"generation timed out after {timeout:g} s")
        self._entries.pop(task_id, None)
        if entry.error is not None:
            raise entry.error
        return entry.result

    def queue_depth(self) -> int:
        with self._cond:
            return len(self._heap)

    # -- consumer side -------------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                _, _, task_id = heapq.heappop(self._heap)
                entry = self._entries[task_id]
            entry.context.run(self._execute, entry)

    def _execute(self, entry: _Entry) -> None:
        task = entry.task
        tlog = log.bind(task_id=task.id, model=task.model)

        def aborted() -> bool:
            return entry.cancelled or bool(entry.should_abort and entry.should_abort())

        try:
            if aborted():
                raise TaskCancelled("cancelled", "cancelled before it started")
            with self._model_lock:
                entry.state = QueuedState.RUNNING
                self._ensure_model(task.model, tlog)
                started = time.monotonic()
                entry.result = self.generator.run_task(task, progress=entry.progress, should_abort=aborted)
                self.stats.total_generation_time += time.monotonic() - started
            entry.state = QueuedState.COMPLETE
            self.stats.tasks_completed += 1
        except TaskCancelled as exc:
            entry.state, entry.error = QueuedState.CANCELLED, exc
            self.stats.tasks_cancelled += 1
        except BaseException as exc:  # surfaced to the waiting handler; the queue keeps serving
            entry.state, entry.error = QueuedState.FAILED, exc
            self.stats.tasks_failed += 1
            if _is_out_of_memory(exc):
                entry.error = _out_of_memory_error(task, exc)
                # The traceback's frames hold the pipeline's activations: drop them so the unload frees them.
                exc.__traceback__ = None
                tlog.warning("out_of_memory_unloading_model", error=_first_line(exc))
                self.generator.unload_model()
        finally:
            entry.done.set()

    def _ensure_model(self, model: str, tlog: Any) -> None:
        if self.generator.current_model == model:
            return
        previous = self.generator.current_model
        started = time.monotonic()
        switched = self.generator.load_model(model)
        seconds = time.monotonic() - started
        if switched:
            self.stats.model_loads += 1
            if previous is not None:
                self.stats.model_switches += 1
            self.stats.load_time_by_model[model] = self.stats.load_time_by_model.get(model, 0.0) + seconds
            tlog.info("model_switched", previous=previous, model=model, seconds=round(seconds, 3))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _out_of_memory_error(task: GenerationTask, exc: BaseException) -> OutOfMemory:
    asked = ", ".join(f"{key} {task.parameters[key]}" for key in ("resolution", "video_length")
                      if task.parameters.get(key))
    return OutOfMemory(
        f"out of memory while generating with model {task.model!r}{f' ({asked})' if asked else ''}; the model "
        f"was unloaded and the worker goes on. Retry with a smaller resolution or video_length, or a memory "
        f"profile that offloads more. ({type(exc).__name__}: {_first_line(exc)})"
    )


def _is_out_of_memory(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name in {"OutOfMemoryError", "MemoryError"} or "out of memory" in str(exc).lower()
