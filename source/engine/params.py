"""Typed generation parameters, built once from WanGP-style dicts with the three-tier defaults applied."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import structlog
from PIL import Image

from source.errors import InvalidParams

log = structlog.get_logger(__name__)

SOLVERS = ("unipc", "euler", "dpm++")

# Tier 1 of three: model JSON ``settings`` override these, explicit params override both.
SYSTEM_DEFAULTS: Mapping[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "resolution": "832x480",
    "video_length": 81,
    "num_inference_steps": 30,
    "guidance_scale": 5.0,
    "guidance2_scale": None,
    "flow_shift": None,
    "seed": -1,
    "sample_solver": "unipc",
    "embedded_guidance_scale": 6.0,
    "batch_size": 1,
    "image_start": None,
    "image_end": None,
    "image_refs": None,
    "video_guide": None,
    "video_mask": None,
    "video_guide2": None,
    "video_mask2": None,
    "video_prompt_type": "",
    "control_net_weight": 1.0,
    "control_net_weight2": 1.0,
    "activated_loras": (),
    "loras_multipliers": (),
}

# Upper bounds that keep a typo (or a hostile row) from asking for terabytes: far above what any model
# here generates (LTX-Video 1216x704x257 is ~220M pixels per call).
MAX_SIDE = 4096
MAX_VIDEO_LENGTH = 1025
MAX_BATCH_SIZE = 16
MAX_STEPS = 10_000
MAX_SEED = 2**63 - 1  # what torch.Generator.manual_seed takes as a signed 64-bit value
MAX_PIXELS_PER_CALL = 2**28

ImageInput = str | Path | Image.Image
# A LoRA's multiplier per phase: one value for every expert, or (high noise, low noise).
LoraWeight = tuple[float, ...]
_RESOLUTION_RE = re.compile(r"^\s*(\d+)\s*[xX*]\s*(\d+)\s*$")


@dataclass(frozen=True)
class GenerationParams:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    video_length: int
    num_inference_steps: int
    guidance_scale: float
    guidance2_scale: float | None
    flow_shift: float | None
    seed: int
    sample_solver: str
    embedded_guidance_scale: float
    batch_size: int
    image_start: ImageInput | None
    image_end: ImageInput | None
    image_refs: tuple[ImageInput, ...]
    video_guide: Any
    video_mask: Any
    video_guide2: Any
    video_mask2: Any
    video_prompt_type: str
    control_net_weight: float
    control_net_weight2: float
    activated_loras: tuple[str, ...]
    loras_multipliers: tuple[LoraWeight, ...]

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"


def parse_resolution(value: Any) -> tuple[int, int]:
    """``"832x480"`` → (832, 480); a pair (w, h) is accepted too."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        width, height = value
    else:
        match = _RESOLUTION_RE.match(str(value))
        if not match:
            raise InvalidParams(f"resolution must look like 'WIDTHxHEIGHT' (e.g. '832x480'), got {value!r}")
        width, height = match.groups()
    width, height = _int("resolution width", width), _int("resolution height", height)
    if width <= 0 or height <= 0:
        raise InvalidParams(f"resolution must be positive, got {width}x{height}")
    return width, height


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidParams(f"{name} must be an integer, got {value!r}")
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise InvalidParams(f"{name} must be an integer, got {value!r}") from None
    if not as_float.is_integer():
        raise InvalidParams(f"{name} must be an integer, got {value!r}")
    return int(as_float)


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidParams(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidParams(f"{name} must be a number, got {value!r}") from None


def _positive_int(name: str, value: Any) -> int:
    number = _int(name, value)
    if number <= 0:
        raise InvalidParams(f"{name} must be a positive integer, got {number}")
    return number


def _bounded_int(name: str, value: Any, maximum: int) -> int:
    number = _positive_int(name, value)
    if number > maximum:
        raise InvalidParams(f"{name} must be at most {maximum}, got {number}")
    return number


def _optional_float(name: str, value: Any) -> float | None:
    return None if value is None else _float(name, value)


def _string_list(name: str, value: Any) -> tuple[str, ...]:
    """WanGP writes lists either as JSON lists or as comma-separated strings."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise InvalidParams(f"{name} must be a list of names or a comma-separated string, got {value!r}")


def _multipliers(value: Any) -> tuple[LoraWeight, ...]:
    """One entry per LoRA: a number (every phase) or WanGP's phase form ``"high;low"`` (one value per
    expert of a two-expert model)."""
    if value is None or value == "":
        return ()
    parts = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    weights = []
    for part in parts:
        phases = part.split(";") if isinstance(part, str) else [part]
        if len(phases) > 2:
            raise InvalidParams(f"loras_multipliers: {part!r} has {len(phases)} phases; at most 2 (high;low noise)")
        weights.append(tuple(_float("loras_multipliers", p) for p in phases))
    return tuple(weights)


def _image(name: str, value: Any) -> ImageInput | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        # WanGP passes image_start/image_end as a one-element list from its UI.
        if len(value) != 1:
            raise InvalidParams(f"{name} must be one image, got {len(value)}")
        value = value[0]
    if isinstance(value, (str, Path, Image.Image)):
        return value
    raise InvalidParams(f"{name} must be an image path or PIL image, got {type(value).__name__}")


def _images(name: str, value: Any) -> tuple[ImageInput, ...]:
    if value is None or value == "":
        return ()
    values = value if isinstance(value, (list, tuple)) else [value]
    return tuple(_image(name, v) for v in values)


def resolve_params(system: Mapping[str, Any], model: Mapping[str, Any], explicit: Mapping[str, Any]) -> dict:
    """Merge the three tiers; explicit ``None`` means "not given" so it never hides a default."""
    merged = dict(system)
    merged.update(model)
    merged.update({key: value for key, value in explicit.items() if value is not None})
    return merged


def build_params(values: Mapping[str, Any]) -> GenerationParams:
    known = {f.name for f in fields(GenerationParams)} | {"resolution"}
    ignored = sorted(set(values) - known)
    if ignored:
        log.debug("params_ignored", names=ignored)
    width, height = parse_resolution(values["resolution"])
    solver = str(values["sample_solver"]).strip().lower()
    if solver not in SOLVERS:
        raise InvalidParams(f"unknown sample_solver {values['sample_solver']!r}; choose one of {', '.join(SOLVERS)}")
    seed = _int("seed", values["seed"])
    if not -1 <= seed <= MAX_SEED:
        raise InvalidParams(f"seed must be -1 (random) or an integer from 0 to {MAX_SEED}, got {values['seed']!r}")
    prompt = values["prompt"]
    if not isinstance(prompt, str):
        raise InvalidParams(f"prompt must be a string, got {type(prompt).__name__}")
    negative = values["negative_prompt"] or ""
    if not isinstance(negative, str):
        raise InvalidParams(f"negative_prompt must be a string, got {type(negative).__name__}")
    loras = _string_list("activated_loras", values["activated_loras"])
    multipliers = _multipliers(values["loras_multipliers"])
    if len(multipliers) > len(loras):
        raise InvalidParams(f"loras_multipliers has {len(multipliers)} values for {len(loras)} activated_loras")
    video_length = _bounded_int("video_length", values["video_length"], MAX_VIDEO_LENGTH)
    batch_size = _bounded_int("batch_size", values["batch_size"], MAX_BATCH_SIZE)
    if max(width, height) > MAX_SIDE:
        raise InvalidParams(f"resolution {width}x{height} is too large: each side must be at most {MAX_SIDE}")
    if width * height * video_length * batch_size > MAX_PIXELS_PER_CALL:
        raise InvalidParams(
            f"resolution {width}x{height} x video_length {video_length} x batch_size {batch_size} is "
            f"{width * height * video_length * batch_size:,} pixels; one call may produce at most "
            f"{MAX_PIXELS_PER_CALL:,}"
        )
    return GenerationParams(
        prompt=prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        video_length=video_length,
        num_inference_steps=_bounded_int("num_inference_steps", values["num_inference_steps"], MAX_STEPS),
        guidance_scale=_float("guidance_scale", values["guidance_scale"]),
        guidance2_scale=_optional_float("guidance2_scale", values["guidance2_scale"]),
        flow_shift=_optional_float("flow_shift", values["flow_shift"]),
        seed=seed,
        sample_solver=solver,
        embedded_guidance_scale=_float("embedded_guidance_scale", values["embedded_guidance_scale"]),
        batch_size=batch_size,
        image_start=_image("image_start", values["image_start"]),
        image_end=_image("image_end", values["image_end"]),
        image_refs=_images("image_refs", values["image_refs"]),
        video_guide=values["video_guide"] or None,
        video_mask=values["video_mask"] or None,
        video_guide2=values["video_guide2"] or None,
        video_mask2=values["video_mask2"] or None,
        video_prompt_type=str(values["video_prompt_type"] or ""),
        control_net_weight=_float("control_net_weight", values["control_net_weight"]),
        control_net_weight2=_float("control_net_weight2", values["control_net_weight2"]),
        activated_loras=loras,
        loras_multipliers=multipliers + ((1.0,),) * (len(loras) - len(multipliers)),
    )
