"""The handler of every direct-generation task type: row → GenerationRequest → HeadlessTaskQueue → file.

The queue comes from the task context: worker.py builds one per process (one resident model) and hands
it to every handler; nothing here holds a process-wide queue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from source.errors import TaskCancelled, TaskError
from source.generation.conversion import GenerationRequest, db_task_to_generation_task, task_types_for_model
from source.generation.progress import StepBar
from source.handlers.context import TaskContext, TaskOutcome
from source.task_files.policy import TaskInputs
from source.task_types import generation_model

if TYPE_CHECKING:
    from source.engine.core import GenerationResult


class GenerationQueue(Protocol):
    """What handlers need from HeadlessTaskQueue (headless_model_management.py)."""

    @property
    def resident_model(self) -> str | None: ...

    stats: Any

    def run(self, request: GenerationRequest, *, inputs: TaskInputs, output_dir: Path,
            progress: Callable[[int, int, str], None] | None,
            should_abort: Callable[[], bool], timeout: float | None) -> GenerationResult: ...


def resident_affinity(queue: GenerationQueue) -> tuple[str | None, tuple[str, ...]]:
    """For the claim: the resident model and the task types that default to it."""
    model = queue.resident_model
    return model, task_types_for_model(model) if model else ()


def _flat_values(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in _flat_values(v)]
    if isinstance(value, list | tuple):
        return [leaf for v in value for leaf in _flat_values(v)]
    return [value]


def generate(ctx: TaskContext, task_type: str, params: Mapping[str, Any]) -> GenerationResult:
    """Run one generation for ``ctx``'s row through the worker's queue, as if it were a ``task_type`` row
    with ``params`` (orchestrator children build their own params: guide videos, masks, references)."""
    queue = ctx.generation
    if queue is None:
        raise TaskError("this worker was started without a generation engine; it cannot run generation tasks")
    if any(isinstance(v, str) and v.startswith(("http://", "https://")) for v in _flat_values(params)):
        ctx.report_progress(0.0, "downloading")  # URL inputs are fetched before the model is touched
    request = db_task_to_generation_task(
        ctx.task.id, task_type, params, priority=ctx.task.priority,
        apply_reward_lora=ctx.settings.apply_reward_lora,
    )
    bar = StepBar(f"{request.model} {ctx.task.id[:8]}")

    def on_step(step: int, total: int, message: str = "") -> None:
        ctx.report_progress(step / max(total, 1), message)
        bar.update(step, total)

    try:
        output = queue.run(request, inputs=ctx.inputs, output_dir=ctx.output_dir, progress=on_step,
                           should_abort=ctx.cancel.is_set,
                           timeout=request.timeout_seconds)
    except TaskCancelled:
        ctx.check_cancelled()  # re-raise with the worker's reason (cancelled / shutdown / timeout)
        raise
    finally:
        bar.close()
    if output.ignored_params:
        ctx.log.warning("params_ignored", keys=list(output.ignored_params))
    ctx.log.info("generation_queue_stats", **queue.stats.as_dict())
    return output


def outcome_of(output: GenerationResult) -> TaskOutcome:
    paths = [Path(p) for p in output.paths]
    return TaskOutcome(output_path=paths[0], result={**output.summary(), "outputs": [str(p) for p in paths]})


def handle_generation(ctx: TaskContext) -> TaskOutcome:
    task_type = ctx.task.task_type
    if generation_model(task_type) is None:  # an unknown type routed here by --legacy-unknown-task-types
        ctx.log.warning("unknown_task_type_generated", model=ctx.params.get("model"),
                        reason="--legacy-unknown-task-types: generated as generate_video with params.model")
        outcome = outcome_of(generate(ctx, "generate_video", ctx.params))
        return TaskOutcome(output_path=outcome.output_path,
                           result={**outcome.result, "generated_as": "generate_video"})
    return outcome_of(generate(ctx, task_type, ctx.params))
