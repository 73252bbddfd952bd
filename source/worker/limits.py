"""How long and how big one task may be: the timeout it runs under (its own ``timeout_seconds``, the worker's
``--task-timeout``, or a default scaled by its model) and the generation work budget (frames × pixels ×
steps), so no single row can hold a worker for hours."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from source.engine.model_defs import load_model_def
from source.engine.params import GenerationParams
from source.errors import InvalidParams
from source.generation.conversion import parse_timeout_seconds
from source.routing import model_for_task_type

# Default timeout: a base plus a share per GB of weights (a 14B Wan, 69 GB: 300 + 4140 s); tasks with no
# model (utilities, orchestrators, stitching) get a flat one.
TIMEOUT_BASE_SECONDS = 300.0
TIMEOUT_SECONDS_PER_WEIGHT_GB = 60.0
TIMEOUT_WITHOUT_MODEL_SECONDS = 1800.0

# width × height × frames × batch × steps of one generation call. Tiny random-weight models (tests, demos)
# are meant to be quick: their budget is about a minute of CPU. Real models: 20x a 720p, 81-frame,
# 50-step Wan video.
TINY_WORK_BUDGET = 20_000_000
FULL_WORK_BUDGET = 20_000_000_000


def task_timeout(task_type: str, params: Mapping[str, Any], configured: float | None) -> float | None:
    """The seconds this task may run: ``params.timeout_seconds`` when given, never more than the worker's
    ``--task-timeout`` (``configured``; 0 = no limit, None = the default scaled by the task's model)."""
    own = parse_timeout_seconds(params.get("timeout_seconds"))
    limit = default_timeout(task_type, params) if configured is None else (configured or None)
    if own is None:
        return limit
    return own if limit is None else min(own, limit)


def default_timeout(task_type: str, params: Mapping[str, Any]) -> float:
    model = params.get("model") if isinstance(params.get("model"), str) else model_for_task_type(task_type)
    if not model:
        return TIMEOUT_WITHOUT_MODEL_SECONDS
    try:
        weights = load_model_def(model).weights
    except Exception:  # an unknown model fails the task in its handler, with its own message
        return TIMEOUT_WITHOUT_MODEL_SECONDS
    if weights.tiny:
        return TIMEOUT_BASE_SECONDS
    if weights.size_gb is None:
        return TIMEOUT_WITHOUT_MODEL_SECONDS
    return TIMEOUT_BASE_SECONDS + TIMEOUT_SECONDS_PER_WEIGHT_GB * weights.size_gb


def input_frames(architecture: str, params: GenerationParams) -> int:
    """Input pictures the model attends to beside the frames it makes, each at (at most) the output's size, the
    size the engine resizes them to first: Kontext's edited image, VACE's reference images."""
    if architecture == "flux_kontext":
        return 1
    if "vace" in architecture:
        return len(params.image_refs)
    return 0


def check_work_budget(model_type: str, params: GenerationParams) -> None:
    """Refuse a generation whose frames (made and read) × pixels × steps exceed the model's budget (resolved
    values)."""
    width, height, frames = params.width, params.height, params.video_length
    steps, batch = params.num_inference_steps, params.batch_size
    definition = load_model_def(model_type)
    budget = TINY_WORK_BUDGET if definition.weights.tiny else FULL_WORK_BUDGET
    inputs = input_frames(definition.architecture, params)
    work = width * height * (frames + inputs) * batch * steps
    if work > budget:
        counted = (f"({frames} frames + {inputs} input image{'s' if inputs > 1 else ''})" if inputs
                   else f"{frames} frames")
        raise InvalidParams(
            f"{width}x{height} x {counted} x {batch} batch x {steps} steps is {work:,} pixel-steps; "
            f"model {model_type!r} allows at most {budget:,} per task"
        )
