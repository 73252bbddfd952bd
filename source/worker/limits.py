"""How long one task may run: its own ``timeout_seconds``, the worker's ``--task-timeout``, or a default scaled
by its model, so no single row can hold a worker for hours (how big a generation may be is checked in its
prepare stage: source/generation/prepare.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from source.engine.model_defs import load_model_def
from source.generation.conversion import parse_timeout_seconds
from source.routing import model_for_task_type

# Default timeout: a base plus a share per GB of weights (a 14B Wan, 69 GB: 300 + 4140 s); tasks with no
# model (utilities, orchestrators, stitching) get a flat one.
TIMEOUT_BASE_SECONDS = 300.0
TIMEOUT_SECONDS_PER_WEIGHT_GB = 60.0
TIMEOUT_WITHOUT_MODEL_SECONDS = 1800.0

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
