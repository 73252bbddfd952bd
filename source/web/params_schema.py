"""Typed params in ``/openapi.json``: ``POST /api/tasks`` as one variant per task type (discriminated by
``task_type``), each with the params schema the worker parses that type's rows with — the generation request's
parsers (source/generation/conversion.py) or the handler's params model (``@takes``) — so a client generator
gives a studio typed calls."""

from __future__ import annotations

from typing import Any

from source.generation.conversion import generation_params_schema
from source.handlers.task_params import params_model_of
from source.routing import GENERATION, ROUTES, canonical_task_type, known_task_types, resolve_handler
from source.worker.webhooks import WEBHOOK_PARAMS_SCHEMA

REF = "#/components/schemas/{model}"


def task_params_components() -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """(task_type → the component name of its params, the components: params models and what they refer to)."""
    components: dict[str, dict[str, Any]] = {"GenerationParams": _with_webhooks(generation_params_schema())}
    names: dict[str, str] = {}
    for task_type in known_task_types():
        canonical = canonical_task_type(task_type)
        if ROUTES[canonical] == GENERATION:
            names[task_type] = "GenerationParams"
            continue
        model = params_model_of(resolve_handler(canonical), canonical)
        if model is None:
            raise LookupError(f"the handler of {canonical!r} names no params model (@takes)")
        schema = model.model_json_schema(ref_template=REF)
        for name, definition in schema.pop("$defs", {}).items():
            _add(components, name, definition)
        schema = _with_webhooks(schema)
        name = model.__name__
        if components.get(name, schema) != schema:  # two modules' models of one name
            name = f"{model.__module__.rsplit('.', 1)[-1]}.{model.__name__}"
        _add(components, name, schema)
        names[task_type] = name
    return names, components


def add_typed_params(openapi: dict[str, Any], *, body: str = "SubmitTask", path: str = "/api/tasks") -> None:
    """Rewrite ``openapi``'s request body of ``POST path`` as one ``Submit_<task_type>`` variant per task type."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    names, components = task_params_components()
    for name, schema in components.items():
        _add(schemas, name, schema)
    mapping = {}
    for task_type, params in names.items():
        variant = f"Submit_{task_type}"
        canonical = canonical_task_type(task_type)
        described = f"{task_type}: the same as {canonical}" if canonical != task_type else task_type
        schemas[variant] = {
            "title": variant, "description": described,
            "allOf": [{"$ref": REF.format(model=body)},
                      {"type": "object", "required": ["task_type"],
                       "properties": {"task_type": {"type": "string", "enum": [task_type]},
                                      "params": {"$ref": REF.format(model=params)}}}]}
        mapping[task_type] = REF.format(model=variant)
    content = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    content["schema"] = {"oneOf": [{"$ref": ref} for ref in mapping.values()],
                         "discriminator": {"propertyName": "task_type", "mapping": mapping}}


def _with_webhooks(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "properties": {**schema.get("properties", {}), **WEBHOOK_PARAMS_SCHEMA}}


def _add(schemas: dict[str, dict[str, Any]], name: str, schema: dict[str, Any]) -> None:
    if schemas.get(name, schema) != schema:
        raise ValueError(f"two different schemas are both named {name!r} in /openapi.json")
    schemas[name] = schema
