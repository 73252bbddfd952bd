"""What a producer may submit: the checks ``tasks add`` and ``POST /api/tasks`` share, run before a row exists.

They are the worker's own edge checks (routing table, generation conversion) run early, so a person learns
at once what the worker would otherwise store as the row's error_message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from source.db.models import MAX_PARAMS_CHARS
from source.errors import InvalidParams
from source.generation.conversion import db_task_to_generation_task
from source.handlers.task_params import params_model_of, parse_params
from source.routing import ROUTES, canonical_task_type, known_task_types, model_for_task_type, resolve_handler
from source.worker.webhooks import check_webhook_syntax, split_webhook_params

_PARAM_NAME = re.compile(r"params\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class SubmissionRefused(ValueError):
    """``field`` names what is wrong (``task_type``, ``params`` or ``params.<name>``)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def check_submission(task_type: str, params: Any) -> None:
    """Raise SubmissionRefused when a worker would refuse this row without running it."""
    if canonical_task_type(task_type) not in ROUTES:
        shown = task_type if len(task_type) <= 80 else task_type[:80] + "..."
        raise SubmissionRefused("task_type", f"unknown task type {shown!r}; known task types: "
                                             f"{', '.join(known_task_types())}")
    if not isinstance(params, dict):
        raise SubmissionRefused("params", "params must be a JSON object")
    size = len(json.dumps(params, ensure_ascii=False))
    if size > MAX_PARAMS_CHARS:  # the worker would fail the row unread (Task.params)
        raise SubmissionRefused("params", f"params is {size} characters as JSON; the limit is {MAX_PARAMS_CHARS}")
    params, webhook_keys = split_webhook_params(params)
    try:
        check_webhook_syntax(webhook_keys)
        if model_for_task_type(task_type) is not None:
            db_task_to_generation_task("submission", task_type, params)
        else:
            handler = resolve_handler(task_type)
            model = params_model_of(handler, canonical_task_type(task_type))
            if model is not None and not getattr(handler, "params_translated", False):
                parse_params(model, params)
    except InvalidParams as exc:
        found = _PARAM_NAME.search(str(exc))
        raise SubmissionRefused(f"params.{found.group(1)}" if found else "params", str(exc)) from None
