"""Crossing the boundary: raw params dicts become typed, validated objects (or a clear InvalidParams)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from source.errors import InvalidParams

log = structlog.get_logger(__name__)

ModelT = TypeVar("ModelT", bound="TaskParams")
HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])


class TaskParams(BaseModel):
    """Base for every handler's params. Unknown keys are allowed (producers send extras) but logged."""

    # allow_inf_nan off: JSON's Infinity/NaN are refused naming the field, as the generation parsers do
    model_config = ConfigDict(extra="allow", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)

    def ignored_params(self) -> list[str]:
        """The keys nothing reads (this model's extras and, dotted, those of nested params)."""
        names = list(self.model_extra or {})
        for name, value in self:
            if isinstance(value, TaskParams):
                names += [f"{name}.{inner}" for inner in value.ignored_params()]
        return sorted(names)


def parse_params(model: type[ModelT], raw: dict[str, Any]) -> ModelT:
    try:
        parsed = model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidParams(describe_validation_error(exc)) from None
    if ignored := parsed.ignored_params():
        log.warning("params_ignored", keys=ignored, hint="not a parameter of this task type; check for typos")
    return parsed


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] != "missing" and "input" in error:
            shown = repr(error["input"])
            message += f" (got {shown[:80] + '...' if len(shown) > 80 else shown})"
        problems.append(f"params.{where}: {message}" if where else f"params: {message}")
    return "invalid params: " + "; ".join(problems)


def takes(model: type[TaskParams] | Mapping[str, type[TaskParams]], *,
          translated: bool = False) -> Callable[[HandlerT], HandlerT]:
    """Name the params model a handler parses its row with (a mapping task type → model for a handler of several
    types): /openapi.json publishes that model's schema, and a submission is checked against it before a row
    exists. ``translated``: the handler first translates older row shapes (or lifts orchestrator_details), so
    only the worker can tell a bad row from an older one."""
    def mark(handler: HandlerT) -> HandlerT:
        handler.params_model = model  # type: ignore[attr-defined]
        handler.params_translated = translated  # type: ignore[attr-defined]
        return handler
    return mark


def params_model_of(handler: Callable[..., Any], task_type: str) -> type[TaskParams] | None:
    """The model ``@takes`` named for ``task_type``'s rows (None: the handler names none)."""
    model = getattr(handler, "params_model", None)
    return model.get(task_type) if isinstance(model, Mapping) else model
