"""task_type → handler. The task types themselves, one record each, are in source/task_types.py.

Handlers are named by import path and loaded on first use, so a worker that only runs utility or
diagnostic tasks never imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from functools import cache
from types import MappingProxyType

from source import task_types
from source.errors import NotImplementedTaskType, UnknownTaskType
from source.handlers.context import TaskContext, TaskOutcome

Handler = Callable[[TaskContext], TaskOutcome]

# The tables below are views of source/task_types.py's records (add a task type there, not here).
GENERATION = task_types.GENERATION

# Direct generation (through HeadlessTaskQueue): task_type → its default model (a defaults/<model>.json
# definition; `params.model` wins).
GENERATION_MODELS: Mapping[str, str] = task_types.GENERATION_MODELS

# None = part of the contract (DESIGN.md), handler not built yet.
ROUTES: dict[str, str | None] = {t.name: t.handler for t in task_types.TASK_TYPES}

# Edits that run one generation of another task type (source/handlers/vace_edit.py): a row naming no model
# needs that type's default model (what the worker's --models must allow for it).
GENERATES_AS: Mapping[str, str] = MappingProxyType(
    {t.name: t.generates_as for t in task_types.TASK_TYPES if t.generates_as})  # type: ignore[misc]
# Other task types that generate in the claiming worker with a model of their own when the row names none.
OWN_DEFAULT_MODELS = task_types.OWN_DEFAULT_MODELS

# Task types that existing producers still insert.
LEGACY_ALIASES: Mapping[str, str] = task_types.ALIASES


def canonical_task_type(task_type: str) -> str:
    return task_types.canonical(task_type)


def model_for_task_type(task_type: str) -> str | None:
    """The model a direct-generation task type runs by default (None for every other task type)."""
    return task_types.generation_model(task_type)


def default_model(task_type: str) -> str | None:
    """The model a row of this type runs when it names none: its own (model_for_task_type, OWN_DEFAULT_MODELS)
    or that of the generation it runs (GENERATES_AS); None for a type that needs no model."""
    return task_types.claim_model(task_type)


def known_task_types() -> list[str]:
    return task_types.known()


def resolve_handler(task_type: str, *, legacy_unknown_model: object = None) -> Handler:
    """``legacy_unknown_model``: the row's ``params.model`` when the worker runs with
    --legacy-unknown-task-types; an unknown type that names a model then goes to generation, as the older
    worker sent every unknown type to its generation queue."""
    name = canonical_task_type(task_type)
    if name not in ROUTES:
        if isinstance(legacy_unknown_model, str) and legacy_unknown_model.strip():
            return _load(GENERATION)
        shown = task_type if len(task_type) <= 80 else task_type[:80] + "..."
        raise UnknownTaskType(f"unknown task type {shown!r}; known task types: {', '.join(known_task_types())}")
    target = ROUTES[name]
    if target is None:
        raise NotImplementedTaskType(f"task type {name!r} is not implemented yet")
    return _load(target)


@cache
def _load(target: str) -> Handler:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
