"""A db row of a direct-generation task type becomes a typed ``GenerationTask``.

The task_type → model table lives here and only here; param aliases are normalised at this edge
(``steps``, ``"WxH"``, list-or-comma LoRA fields, keys nested under ``orchestrator_details``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import structlog

from source.engine.params import SYSTEM_DEFAULTS
from source.errors import InvalidParams
from source.routing import canonical_task_type

log = structlog.get_logger(__name__)

# task_type → model type (a defaults/<model>.json definition). `params.model` wins when present.
TASK_TYPE_MODELS: Mapping[str, str] = MappingProxyType({
    "generate_video": "t2v",
    "t2v": "t2v",
    "t2v_22": "t2v_2_2",
    "wan_2_2_t2i": "t2v_2_2",
    "vace": "vace_14B_cocktail_2_2",
    "vace_21": "vace_14B",
    "vace_22": "vace_14B_cocktail_2_2",
    "i2v": "i2v",
    "i2v_22": "i2v_2_2",
    "flux": "flux",
    "hunyuan": "hunyuan",
    "ltxv": "ltxv_13B",
})

# Task types whose output is a single image whatever the model's default length.
SINGLE_IMAGE_TASK_TYPES = frozenset({"wan_2_2_t2i"})

ALIASES: Mapping[str, str] = MappingProxyType({
    "steps": "num_inference_steps",
    "num_frames": "video_length",
    "frames": "video_length",
    "lora_names": "activated_loras",
    "lora_multipliers": "loras_multipliers",
    "cfg_scale": "guidance_scale",
    "solver": "sample_solver",
})

# Keys the conversion layer itself consumes (not engine parameters).
CONVERSION_KEYS = frozenset({
    "model", "orchestrator_details", "additional_loras", "use_causvid_lora", "use_lighti2x_lora",
    "apply_reward_lora", "timeout_seconds",
})
ENGINE_KEYS = frozenset(SYSTEM_DEFAULTS)
_RESOLUTION = re.compile(r"^\s*(\d{1,5})\s*[xX*×]\s*(\d{1,5})\s*$")


@dataclass(frozen=True)
class GenerationTask:
    """What HeadlessTaskQueue runs: one model, the explicit (task-tier) parameters, LoRA requests."""

    id: str
    task_type: str
    model: str
    parameters: Mapping[str, Any]
    additional_loras: Mapping[str, float] = field(default_factory=dict)
    acceleration_loras: tuple[str, ...] = ()
    priority: int = 0
    single_image: bool = False
    timeout_seconds: float | None = None

    @property
    def prompt(self) -> str:
        return str(self.parameters.get("prompt", ""))


def model_for_task_type(task_type: str) -> str | None:
    return TASK_TYPE_MODELS.get(canonical_task_type(task_type))


def task_types_for_model(model: str) -> tuple[str, ...]:
    """The task types whose default model is ``model`` (used for claim affinity)."""
    return tuple(sorted(t for t, m in TASK_TYPE_MODELS.items() if m == model))


def db_task_to_generation_task(
    task_id: str, task_type: str, params: Mapping[str, Any], *, priority: int = 0, apply_reward_lora: bool = False
) -> GenerationTask:
    canonical = canonical_task_type(task_type)
    if canonical not in TASK_TYPE_MODELS:
        raise InvalidParams(f"task type {task_type!r} is not a direct generation type")
    merged = _lift_orchestrator_details(params)

    model = merged.get("model") or TASK_TYPE_MODELS[canonical]
    if not isinstance(model, str):
        raise InvalidParams(f"params.model must be a model name string, got {type(model).__name__}")

    parameters: dict[str, Any] = {"seed": -1, "negative_prompt": ""}  # essential defaults
    ignored = []
    for key, value in merged.items():
        name = ALIASES.get(key, key)
        if name in ENGINE_KEYS:
            parameters[name] = value
        elif name not in CONVERSION_KEYS:
            ignored.append(key)
    if ignored:
        log.info("params_ignored", keys=sorted(ignored), hint="not a generation parameter; check for typos")

    prompt = parameters.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidParams("params.prompt is required for generation tasks and must be a non-empty string")
    if "resolution" in parameters:
        parameters["resolution"] = normalise_resolution(parameters["resolution"])
    if "activated_loras" in parameters:
        parameters["activated_loras"] = split_list("activated_loras", parameters["activated_loras"])
    if "loras_multipliers" in parameters:
        parameters["loras_multipliers"] = split_multipliers(parameters["loras_multipliers"])

    single_image = canonical in SINGLE_IMAGE_TASK_TYPES
    if single_image:
        parameters["video_length"] = 1

    acceleration = tuple(
        name for name, flag in (("causvid", merged.get("use_causvid_lora")),
                                ("lighti2x", merged.get("use_lighti2x_lora")),
                                ("reward", merged.get("apply_reward_lora") or apply_reward_lora))
        if _truthy(flag)
    )
    timeout = merged.get("timeout_seconds")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        raise InvalidParams(f"params.timeout_seconds must be a positive number, got {timeout!r}")
    return GenerationTask(
        id=task_id,
        task_type=canonical,
        model=model,
        parameters=MappingProxyType(parameters),
        additional_loras=MappingProxyType(_additional_loras(merged.get("additional_loras"))),
        acceleration_loras=acceleration,
        priority=priority,
        single_image=single_image,
        timeout_seconds=float(timeout) if timeout is not None else None,
    )


def _lift_orchestrator_details(params: Mapping[str, Any]) -> dict[str, Any]:
    nested = params.get("orchestrator_details")
    if nested is None:
        return dict(params)
    if not isinstance(nested, Mapping):
        raise InvalidParams("params.orchestrator_details must be an object")
    return {**nested, **{k: v for k, v in params.items() if k != "orchestrator_details"}}  # top level wins


def normalise_resolution(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        width, height = value
    else:
        match = _RESOLUTION.match(str(value)) if isinstance(value, str) else None
        if match is None:
            raise InvalidParams(f"params.resolution must look like 'WIDTHxHEIGHT' (e.g. '832x480'), got {value!r}")
        width, height = int(match.group(1)), int(match.group(2))
    if width <= 0 or height <= 0:
        raise InvalidParams(f"params.resolution must be positive, got {width}x{height}")
    return f"{width}x{height}"


def split_list(name: str, value: Any) -> list[str]:
    """A JSON list or a comma-separated string of names."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise InvalidParams(f"params.{name} must be a list of names or a comma-separated string, got {value!r}")


def split_multipliers(value: Any) -> list[str]:
    """LoRA multipliers as a list, a comma/space-separated string, or WanGP's phase form
    (``"1.0;0 0;1.0"``: one entry per LoRA, ``;`` between the experts' phases). Each entry is kept as
    text; lora_utils turns it into per-phase floats."""
    if value is None or value == "":
        return []
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [str(value)]
    parts = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(parts, list | tuple):
        raise InvalidParams(f"params.loras_multipliers must be a list or a string, got {type(value).__name__}")
    entries = []
    for part in parts:
        text = str(part).strip()
        try:
            [float(phase) for phase in text.split(";")]
        except ValueError:
            raise InvalidParams(f"params.loras_multipliers: {text!r} is not a number or 'a;b' phases") from None
        entries.append(text)
    return entries


def _additional_loras(value: Any) -> dict[str, float]:
    if value is None or value == {} or value == []:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidParams("params.additional_loras must be an object {url_or_path: multiplier}")
    loras = {}
    for source, multiplier in value.items():
        try:
            loras[str(source)] = float(multiplier)
        except (TypeError, ValueError):
            raise InvalidParams(f"params.additional_loras[{source!r}]: multiplier must be a number") from None
    return loras


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)
