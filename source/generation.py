"""The handler of every direct-generation task type: row → GenerationTask → HeadlessTaskQueue → file.

One queue (and so one resident model) per worker process, created on the first generation task so
that workers running only utility tasks never import torch.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from source.errors import TaskCancelled
from source.input_policy import TaskInputs
from source.inputs import resolve_generation_files
from source.progress_bar import StepBar
from source.settings import WorkerSettings
from source.task_context import TaskContext, TaskOutcome
from source.task_conversion import GenerationTask, db_task_to_generation_task, task_types_for_model

if TYPE_CHECKING:
    from source.engine.core import GenerationResult

_queue_lock = threading.Lock()
_queue = None


def generation_queue(settings: WorkerSettings):
    """The process-wide HeadlessTaskQueue, started on first use."""
    global _queue
    with _queue_lock:
        if _queue is None:
            from headless_model_management import HeadlessTaskQueue
            from headless_wgp import WanOrchestrator

            orchestrator = WanOrchestrator(settings.main_output_dir.resolve())
            _queue = HeadlessTaskQueue(orchestrator, workers=settings.queue_workers).start()
        return _queue


def preload_model(settings: WorkerSettings, model_type: str) -> None:
    """Make ``model_type`` resident (downloading its weights if needed) before the first claim, so the first
    task's lease is not spent on a download (worker.py --preload-model)."""
    generation_queue(settings).generator.load_model(model_type)


def resident_affinity() -> tuple[str | None, tuple[str, ...]]:
    """For the claim: the resident model and the task types that default to it."""
    queue = _queue
    model = queue.resident_model if queue is not None else None
    return model, task_types_for_model(model) if model else ()


def queue_stats() -> dict | None:
    """The generation queue's counters for the workers table (None before the first generation task)."""
    return _queue.stats.as_dict() if _queue is not None else None


def _flat_values(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in _flat_values(v)]
    if isinstance(value, list | tuple):
        return [leaf for v in value for leaf in _flat_values(v)]
    return [value]


def generate(ctx: TaskContext, task_type: str, params: Mapping[str, Any]) -> GenerationResult:
    """Run one generation for ``ctx``'s row through the worker's queue, as if it were a ``task_type`` row
    with ``params`` (orchestrator children build their own params: guide videos, masks, references)."""
    if any(isinstance(v, str) and v.startswith(("http://", "https://")) for v in _flat_values(params)):
        ctx.report_progress(0.0, "downloading")  # URL inputs are fetched before the model is touched
    task = prepare_inputs(db_task_to_generation_task(
        ctx.task.id, task_type, params, priority=ctx.task.priority,
        apply_reward_lora=ctx.settings.apply_reward_lora,
    ), ctx.inputs)
    queue = generation_queue(ctx.settings)
    bar = StepBar(f"{task.model} {ctx.task.id[:8]}")

    def on_step(step: int, total: int, message: str = "") -> None:
        ctx.report_progress(step / max(total, 1), message)
        bar.update(step, total)

    queue.submit(task, progress=on_step, should_abort=ctx.cancel.is_set)
    try:
        output = queue.wait(task.id, timeout=task.timeout_seconds)
    except TaskCancelled:
        ctx.check_cancelled()  # re-raise with the worker's reason (cancelled / shutdown / timeout)
        raise
    finally:
        bar.close()
    ctx.log.info("generation_queue_stats", **queue.stats.as_dict())
    return output


def prepare_inputs(task: GenerationTask, inputs: TaskInputs) -> GenerationTask:
    """Every file and LoRA the task names, checked under the worker's input policy and made local before
    the task is queued: a bad input fails the row before any model is loaded."""
    from source.engine.loras import model_lora_dir
    from source.lora_utils import prepare_additional_loras

    task = replace(task, parameters=MappingProxyType(resolve_generation_files(task.parameters, inputs)))
    return prepare_additional_loras(task, model_lora_dir(task.model), inputs)


def outcome_of(output: GenerationResult) -> TaskOutcome:
    paths = [Path(p) for p in output.paths]
    return TaskOutcome(output_path=paths[0], result={**output.summary(), "outputs": [str(p) for p in paths]})


def handle_generation(ctx: TaskContext) -> TaskOutcome:
    return outcome_of(generate(ctx, ctx.task.task_type, ctx.params))
