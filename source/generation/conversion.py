"""A db row of a direct-generation task type becomes a frozen, typed ``GenerationRequest``.

The request holds only what the task gave: aliases mapped (``steps`` → ``num_inference_steps``, ...), keys
nested under ``orchestrator_details`` lifted, each value parsed by its one parser (source/engine/params.py),
and no defaults: the model JSON and the system defaults fill the rest in ``WanOrchestrator``, once.
Keys the engine does not use are listed in ``ignored_params`` (the row's result shows them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import structlog

from source.engine.params import (
    PARSERS,
    LoraWeight,
    json_schema_of,
    parse_multipliers,
    parse_resolution,
    parse_values,
)
from source.errors import InvalidParams
from source.generation.phase_config import expand_phase_config
from source.generation.wangp_parameters import TRANSLATED, check_refused
from source.task_types import GENERATION_MODELS, OWN_DEFAULT_MODELS, TASK_TYPES, Output
from source.task_types import canonical as canonical_task_type

log = structlog.get_logger(__name__)

# task_type → model type (a defaults/<model>.json definition), from source/task_types.py, so the two
# can never disagree. `params.model` wins when present.
TASK_TYPE_MODELS: Mapping[str, str] = GENERATION_MODELS

# Task types whose output is a single image whatever the model's default length.
SINGLE_IMAGE_TASK_TYPES = frozenset(t.name for t in TASK_TYPES if t.output is Output.SINGLE_IMAGE)

ALIASES: Mapping[str, str] = MappingProxyType({
    "steps": "num_inference_steps",
    "num_frames": "video_length",
    "frames": "video_length",
    "lora_names": "activated_loras",
    "lora_multipliers": "loras_multipliers",
    "cfg_scale": "guidance_scale",
    "solver": "sample_solver",
    # the older worker's names
    "image_refs_paths": "image_refs",
    "video_guide_path": "video_guide",
    "video_mask_path": "video_mask",
    # WanGP's current names of skip-layer guidance (its settings 2.54 renamed slg_*)
    **TRANSLATED,
})

_FLAG: Mapping[str, Any] = MappingProxyType({"anyOf": [{"type": "boolean"}, {"type": "string"}, {"type": "integer"}],
                                            "description": "true, or 1/yes/on"})
# Keys the conversion layer itself consumes (not engine parameters), with the JSON schema of what each takes.
CONVERSION_PARAMS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "model": {"type": "string", "description": "a model definition (`tasks models`) [default: the task type's]"},
    "orchestrator_details": {"type": "object", "description": "the older worker's nesting: its keys are lifted "
                                                              "(the top level wins)"},
    "additional_loras": {"type": "object", "additionalProperties": {"anyOf": [{"type": "number"}, {"type": "string"}]},
                         "description": "{url_or_path: multiplier}, a multiplier a number or 'a;b;c' per phase"},
    "image_prompt_type": {"type": "string", "description": "WanGP's letters: S uses image_start, E image_end"},
    "use_causvid_lora": _FLAG, "use_lighti2x_lora": _FLAG, "apply_reward_lora": _FLAG,
    "timeout_seconds": {"type": "number", "exclusiveMinimum": 0,
                        "description": "may only shorten the worker's --task-timeout"},
    "depth_model": {"type": "string", "minLength": 1, "description": "the depth estimator for video_prompt_type D"},
})
CONVERSION_KEYS = frozenset(CONVERSION_PARAMS)
# The engine's parameters: each has one parser in source/engine/params.py.
ENGINE_KEYS = frozenset(PARSERS)


def generation_params_schema() -> dict[str, Any]:
    """The JSON schema of what ``db_task_to_generation_task`` takes: each engine parameter as its one parser
    describes it, the aliases, and the conversion's own keys."""
    properties: dict[str, Any] = {name: json_schema_of(parse) for name, parse in PARSERS.items()}
    properties["prompt"] = {**properties["prompt"], "minLength": 1, "pattern": r"\S"}
    for alias, name in ALIASES.items():
        properties[alias] = {**properties[name], "description": f"the same as {name}"}
    properties.update({name: dict(schema) for name, schema in CONVERSION_PARAMS.items()})
    return {"type": "object", "title": "GenerationParams", "required": ["prompt"], "properties": properties,
            "additionalProperties": True,
            "description": "A generation task's params; values not given come from the model's defaults/<model>.json "
                           "settings, then the system defaults. Other keys are accepted and listed in the row's "
                           "result.ignored_params."}


@dataclass(frozen=True)
class GenerationRequest:
    """What HeadlessTaskQueue runs: one model, the task tier of its parameters (parsed, no defaults),
    LoRA requests, and the params the engine will not use."""

    id: str
    task_type: str
    model: str
    parameters: Mapping[str, Any]
    # source → multiplier (one value, or one per guidance phase)
    additional_loras: Mapping[str, LoraWeight] = field(default_factory=dict)
    # False when the row's phase_config replaces the LoRAs a model definition runs its phases with.
    model_phase_loras: bool = True
    acceleration_loras: tuple[str, ...] = ()
    priority: int = 0
    timeout_seconds: float | None = None
    ignored_params: tuple[str, ...] = ()
    # The depth estimator for video_prompt_type "D" (a name of source/media/depth.py's DEPTH_MODELS).
    depth_model: str | None = None
    # The worker's --apply-reward-lora: added where the model supports it (Wan), skipped elsewhere.
    worker_reward_lora: bool = False


def parse_timeout_seconds(value: Any) -> float | None:
    """A row's ``params.timeout_seconds``: a positive, finite number of seconds (None when not given). The one
    check of it, for the worker's task timeout (worker/limits.py) and the generation request alike."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidParams(f"params.timeout_seconds must be a positive number, got {value!r}")
    return float(value)


def task_types_for_model(model: str) -> tuple[str, ...]:
    """The task types whose default model is ``model`` (used for claim affinity)."""
    return tuple(sorted(t for t, m in TASK_TYPE_MODELS.items() if m == model))


# The name the LoRA code and older call sites use.
GenerationTask = GenerationRequest


def db_task_to_generation_task(
    task_id: str, task_type: str, params: Mapping[str, Any], *, priority: int = 0, apply_reward_lora: bool = False
) -> GenerationRequest:
    canonical = canonical_task_type(task_type)
    # Direct generation types, and the handlers that generate with a model of their own (their rows' params
    # already translated into engine parameters by the handler).
    default = TASK_TYPE_MODELS.get(canonical) or OWN_DEFAULT_MODELS.get(canonical)
    if default is None:
        raise InvalidParams(f"task type {task_type!r} is not a direct generation type")
    lifted = lift_orchestrator_details(params)
    merged = expand_phase_config(lifted.params)

    model = merged.get("model") or default
    if not isinstance(model, str):
        raise InvalidParams(f"params.model must be a model name string, got {type(model).__name__}")

    given: dict[str, Any] = {}
    given_as: dict[str, str] = {}  # the name the row wrote, for errors
    unused: dict[str, Any] = {}
    for key, value in merged.items():
        name = ALIASES.get(key, key)
        if name in ENGINE_KEYS:
            if name in given and given[name] != value:
                raise InvalidParams(f"params give {name} twice with different values (alias {key!r})")
            given[name] = value
            given_as.setdefault(name, key)
        elif name not in CONVERSION_KEYS:
            unused[key] = value
    # WanGP's parameters this worker does not run fail the row unless at WanGP's "off"; only names no WanGP
    # version defines are listed as ignored (source/generation/wangp_parameters.py).
    at_off = set(check_refused(unused))
    ignored = [lifted.given_as(key) for key in unused if key not in at_off]
    given = select_images(given, merged.get("image_prompt_type"))
    parameters = parse_values(given, prefix="params.", given_as=given_as)
    if ignored:
        log.warning("params_ignored", keys=sorted(ignored), hint="not a generation parameter; check for typos")

    prompt = parameters.get("prompt")
    # An image to start from is enough on its own (image-to-image and edits run with a blank prompt).
    from_image = parameters.get("image_start") is not None or bool(parameters.get("image_refs"))
    if not isinstance(prompt, str) or not (prompt.strip() or (from_image and prompt)):
        raise InvalidParams("params.prompt is required for generation tasks and must be a non-empty string")

    if canonical in SINGLE_IMAGE_TASK_TYPES:
        parameters["video_length"] = 1

    acceleration = tuple(
        name for name, flag in (("causvid", merged.get("use_causvid_lora")),
                                ("lighti2x", merged.get("use_lighti2x_lora")),
                                ("reward", merged.get("apply_reward_lora")))
        if _truthy(flag)
    )
    timeout = parse_timeout_seconds(merged.get("timeout_seconds"))
    return GenerationRequest(
        id=task_id,
        task_type=canonical,
        model=model,
        parameters=MappingProxyType(parameters),
        additional_loras=MappingProxyType(_additional_loras(merged.get("additional_loras"))),
        model_phase_loras=lifted.params.get("phase_config") is None,
        acceleration_loras=acceleration,
        priority=priority,
        timeout_seconds=timeout,
        ignored_params=tuple(sorted(ignored)),
        depth_model=_optional_name("depth_model", merged.get("depth_model")),
        worker_reward_lora=apply_reward_lora,
    )


@dataclass(frozen=True)
class Lifted:
    """A row's params with ``orchestrator_details`` merged in (the top level wins)."""

    params: dict[str, Any]
    nested: frozenset[str] = frozenset()  # keys that came from orchestrator_details

    def given_as(self, key: str) -> str:
        """The name the row gave ``key`` under: dotted when it was nested (for ignored_params)."""
        return f"orchestrator_details.{key}" if key in self.nested else key

    def ignored(self, keys: list[str]) -> list[str]:
        return sorted(self.given_as(key) for key in keys)


def lift_orchestrator_details(params: Mapping[str, Any]) -> Lifted:
    """The one lifting of the older worker's ``orchestrator_details`` nesting, for generation rows and every
    handler it fed that way (magic_edit, different perspective)."""
    nested = params.get("orchestrator_details")
    if nested is None:
        return Lifted(dict(params))
    if not isinstance(nested, Mapping):
        raise InvalidParams("params.orchestrator_details must be an object")
    top = {k: v for k, v in params.items() if k != "orchestrator_details"}
    return Lifted({**nested, **top}, frozenset(k for k in nested if k not in top))


def select_images(given: dict[str, Any], letters: Any) -> dict[str, Any]:
    """WanGP's ``image_prompt_type``: S uses image_start, E uses image_end; an image not in the letters is not
    used. V and L (continue a video) are not run here."""
    if letters is None or letters == "":
        return given
    if not isinstance(letters, str) or set(letters.upper()) - set("SE"):
        raise InvalidParams(f"params.image_prompt_type {letters!r}: only S (image_start) and E (image_end) are run "
                            f"here; V/L (continue a video) are not")
    chosen = dict(given)
    for letter, name in (("S", "image_start"), ("E", "image_end")):
        if letter not in letters.upper():
            chosen.pop(name, None)
    return chosen


def normalise_resolution(value: Any) -> str:
    """``params.resolution`` as canonical ``"WxH"`` text (for handlers that pass it on)."""
    width, height = parse_resolution(value, "params.resolution")
    return f"{width}x{height}"


def _additional_loras(value: Any) -> dict[str, LoraWeight]:
    """``{source: multiplier}``; a multiplier is a number or WanGP's per-phase ``"a;b;c"``."""
    if value is None or value == {} or value == []:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidParams("params.additional_loras must be an object {url_or_path: multiplier}")
    loras = {}
    for source, multiplier in value.items():
        where = f"params.additional_loras[{source!r}]"
        if isinstance(multiplier, bool) or not isinstance(multiplier, int | float | str):
            raise InvalidParams(f"{where}: multiplier must be a number or 'a;b;c' phases, got {multiplier!r}")
        parsed = parse_multipliers(where, [multiplier])
        if len(parsed) != 1:
            raise InvalidParams(f"{where}: multiplier must be one number or 'a;b;c' phases, got {multiplier!r}")
        loras[str(source)] = parsed[0]
    return loras


def _optional_name(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidParams(f"params.{name} must be a name, got {value!r}")
    return value.strip()


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)
