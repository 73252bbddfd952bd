"""HeadlessTaskQueue: keeps one model resident and runs generation requests on it, preparing each request
before it touches the model.

Prepare, then switch: validation, LoRA fetches, input downloads and parameter resolution run first, outside
the model lock; a request that fails there never loads or switches a model. Only then does the request
take the lock, switch the model if it needs another one, and generate.

There is no queue of its own: the worker runs one handler at a time and the row's priority already decided
the order at claim time, so a request runs in the calling (handler) thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from source.errors import CancelReason, OutOfMemory, TaskCancelled, TaskError
from source.generation.conversion import GenerationRequest
from source.task_files.policy import TaskInputs

log = structlog.get_logger(__name__)


class Prepared(Protocol):
    """A prepared request (source/generation/prepare.py's PreparedGeneration)."""

    definition: Any  # the model definition the prepare stage loaded: the switch loads the model from it


class Generator(Protocol):
    """What the queue needs from the layer below (WanOrchestrator)."""

    current_model: str | None

    def load_model(self, model_type: str, definition: Any = None) -> bool: ...

    def unload_model(self) -> None: ...

    def prepare(self, request: GenerationRequest, *, inputs: TaskInputs) -> Prepared: ...

    def run(self, prepared: Any, *, progress: Callable[[int, int, str], None] | None,
            should_abort: Callable[[], bool], output_dir: Path | None) -> Any: ...


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
    """The resident-model runner (the name is the older worker's, kept for its callers): not a queue, the
    claim already ordered the rows; it prepares a request, switches the one resident model if needed, and
    generates, one request at a time, in the caller's thread."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.stats = QueueStatistics()
        # One accelerator: model switching and generation are serialised (orchestrator children and
        # programmatic callers may share the queue from several threads).
        self._model_lock = threading.Lock()
        self._stats_lock = threading.Lock()

    @property
    def resident_model(self) -> str | None:
        return self.generator.current_model

    def run(self, request: GenerationRequest, *, inputs: TaskInputs, output_dir: Path | None = None,
            progress: Callable[[int, int, str], None] | None = None,
            should_abort: Callable[[], bool] = lambda: False, timeout: float | None = None) -> Any:
        """Prepare ``request``, then generate it on its model. Raises the task's error; on ``timeout`` the
        generation stops at its next step and fails with a TaskError naming the limit."""
        tlog = log.bind(task_id=request.id, model=request.model)
        deadline = time.monotonic() + timeout if timeout else None

        def aborted() -> bool:
            return should_abort() or (deadline is not None and time.monotonic() >= deadline)

        self._count("tasks_submitted")
        try:
            prepared = self.generator.prepare(request, inputs=inputs)
            if aborted():
                raise TaskCancelled(CancelReason.CANCELLED, "cancelled before it started")
            with self._model_lock:
                self._ensure_model(request.model, tlog, prepared.definition)
                started = time.monotonic()
                result = self.generator.run(prepared, progress=progress, should_abort=aborted, output_dir=output_dir)
                with self._stats_lock:
                    self.stats.total_generation_time += time.monotonic() - started
        except TaskCancelled as exc:
            self._count("tasks_cancelled")
            if deadline is not None and time.monotonic() >= deadline and not should_abort():
                raise TaskError(f"generation timed out after {timeout:g} s") from exc
            raise
        except BaseException as exc:
            self._count("tasks_failed")
            if _is_out_of_memory(exc):
                # The traceback's frames hold the pipeline's activations: drop them so the unload frees them.
                exc.__traceback__ = None
                tlog.warning("out_of_memory_unloading_model", error=_first_line(exc))
                with self._model_lock:
                    self.generator.unload_model()
                raise _out_of_memory_error(request, exc) from None
            raise
        self._count("tasks_completed")
        return result

    def _count(self, name: str) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def _ensure_model(self, model: str, tlog: Any, definition: Any = None) -> None:
        if self.generator.current_model == model:
            return
        previous = self.generator.current_model
        started = time.monotonic()
        switched = self.generator.load_model(model, definition)
        seconds = time.monotonic() - started
        if switched:
            with self._stats_lock:
                self.stats.model_loads += 1
                if previous is not None:
                    self.stats.model_switches += 1
                self.stats.load_time_by_model[model] = self.stats.load_time_by_model.get(model, 0.0) + seconds
            tlog.info("model_switched", previous=previous, model=model, seconds=round(seconds, 3))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _out_of_memory_error(request: GenerationRequest, exc: BaseException) -> OutOfMemory:
    asked = ", ".join(f"{key} {_shown(request.parameters[key])}" for key in ("resolution", "video_length")
                      if request.parameters.get(key))
    return OutOfMemory(
        f"out of memory while generating with model {request.model!r}{f' ({asked})' if asked else ''}; the model "
        f"was unloaded and the worker goes on. Retry with a smaller resolution or video_length, or a memory "
        f"profile that offloads more. ({type(exc).__name__}: {_first_line(exc)})"
    )


def _shown(value: Any) -> str:
    return f"{value[0]}x{value[1]}" if isinstance(value, tuple) else str(value)


def _is_out_of_memory(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name in {"OutOfMemoryError", "MemoryError"} or "out of memory" in str(exc).lower()
