"""Generation parameters: the one parser per parameter, the three tiers resolved once, typed results."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import structlog
from PIL import Image

from source.errors import DefinitionError, InvalidParams

log = structlog.get_logger(__name__)

SOLVERS = ("unipc", "euler", "dpm++")

# Tier 1 of three: model JSON ``settings`` override these, explicit params override both.
SYSTEM_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "prompt": "",
    "negative_prompt": "",
    "resolution": "832x480",
    "video_length": 81,
    "num_inference_steps": 30,
    "guidance_scale": 5.0,
    "guidance2_scale": None,
    # WanGP's guidance phases (source/engine/phases.py): None = the model's own split (one phase, or the Wan 2.2
    # expert boundary); 2 or 3 phases, each with its own guidance and LoRA multipliers.
    "guidance_phases": None,
    "guidance3_scale": None,
    "switch_threshold": None,
    "switch_threshold2": None,
    "model_switch_phase": 1,
    "steps_per_phase": None,
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
    # WanGP's generation features (source/engine/features.py says which apply to which family), each
    # default meaning "off" as in WanGP.
    "temporal_upsampling": "",
    "spatial_upsampling": "",
    "film_grain_intensity": 0.0,
    "film_grain_saturation": 0.5,
    "skip_steps_cache_type": "",
    "skip_steps_multiplier": 1.5,
    "skip_steps_start_step_perc": 0.0,
    "cfg_star_switch": 0,
    "cfg_zero_step": -1,
    "apg_switch": 0,
    "slg_switch": 0,
    "slg_layers": (),
    "slg_start_perc": 10.0,
    "slg_end_perc": 90.0,
    "NAG_scale": 1.0,
    "NAG_tau": 3.5,
    "NAG_alpha": 0.5,
    "RIFLEx_setting": 0,
    "sliding_window_size": None,
    "sliding_window_overlap": 5,
    "sliding_window_overlap_noise": 0.0,
    "sliding_window_discard_last_frames": 0,
    "sliding_window_color_correction_strength": 0.0,
    # Image models: the file format of each image; image-to-image/inpainting (a source image_start, an
    # image_mask whose white area is regenerated, how far from the source: 1 = all the way); the system turn of
    # a chat-template text encoder (Qwen), "" = the model's own.
    "output_format": "png",
    "image_mask": None,
    "denoising_strength": 1.0,
    "system_prompt": "",
})

# Upper bounds that keep a typo (or a hostile row) from asking for terabytes: far above what any model
# here generates (LTX-Video 1216x704x257 is ~220M pixels per call).
MAX_SIDE = 4096
MAX_VIDEO_LENGTH = 1025
MAX_BATCH_SIZE = 16
MAX_STEPS = 10_000
MAX_SEED = 2**63 - 1  # what torch.Generator.manual_seed takes as a signed 64-bit value
MAX_PIXELS_PER_CALL = 2**28

ImageInput = str | Path | Image.Image
# A LoRA's multiplier per guidance phase: one value for every phase, or one per phase (source/engine/phases.py;
# without guidance phases the phases of a two-expert model are its experts).
# A phase's entry may be a ramp: values spread over the phase's steps, as WanGP reads "a,b,c" inside a phase.
PhaseWeight = float | tuple[float, ...]
LoraWeight = tuple[PhaseWeight, ...]
_RESOLUTION_RE = re.compile(r"^\s*(\d{1,5})\s*[xX*×]\s*(\d{1,5})\s*$")

Parser = Callable[[str, Any], Any]


def described(schema: Mapping[str, Any], parse: Parser) -> Parser:
    """``parse`` with the JSON schema of what it accepts (``parse.json_schema``): /openapi.json publishes the
    parsers' own bounds and choices, so the schema and the validation cannot drift apart."""
    parse.json_schema = MappingProxyType(dict(schema))  # type: ignore[attr-defined]
    return parse


def json_schema_of(parse: Parser) -> dict[str, Any]:
    return dict(parse.json_schema)  # type: ignore[attr-defined]


_STRING = {"type": "string"}
_NUMBER = {"type": "number"}
_FILE = {"type": "string", "description": "a file path under the worker's input roots, or an http(s) URL"}


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
    guidance_phases: int | None
    guidance3_scale: float | None
    switch_threshold: float | None
    switch_threshold2: float | None
    model_switch_phase: int
    steps_per_phase: tuple[int, ...] | None
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
    temporal_upsampling: str
    spatial_upsampling: str
    film_grain_intensity: float
    film_grain_saturation: float
    skip_steps_cache_type: str
    skip_steps_multiplier: float
    skip_steps_start_step_perc: float
    cfg_star_switch: int
    cfg_zero_step: int
    apg_switch: int
    slg_switch: int
    slg_layers: tuple[int, ...]
    slg_start_perc: float
    slg_end_perc: float
    NAG_scale: float
    NAG_tau: float
    NAG_alpha: float
    RIFLEx_setting: int
    sliding_window_size: int | None
    sliding_window_overlap: int
    sliding_window_overlap_noise: float
    sliding_window_discard_last_frames: int
    sliding_window_color_correction_strength: float
    output_format: str
    image_mask: ImageInput | None
    denoising_strength: float
    system_prompt: str

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"


def parse_resolution(value: Any, name: str = "resolution") -> tuple[int, int]:
    """``"832x480"`` (also ``832X480``, ``832*480``, ``832×480``) → (832, 480); a pair (w, h) is accepted too."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        width, height = value
    else:
        match = _RESOLUTION_RE.match(value) if isinstance(value, str) else None
        if not match:
            raise InvalidParams(f"{name} must look like 'WIDTHxHEIGHT' (e.g. '832x480'), got {value!r}")
        width, height = match.groups()
    width, height = _int(f"{name} width", width), _int(f"{name} height", height)
    if width <= 0 or height <= 0:
        raise InvalidParams(f"{name} must be positive, got {width}x{height}")
    if max(width, height) > MAX_SIDE:
        raise InvalidParams(f"{name} must be at most {MAX_SIDE} on each side, got {width}x{height}")
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
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidParams(f"{name} must be a number, got {value!r}") from None
    # JSON's Infinity/NaN (and "inf" text) parse as floats: flow_shift=Infinity made an all-black video, and
    # guidance_scale=NaN silently acted as no guidance
    if not math.isfinite(number):
        raise InvalidParams(f"{name} must be a finite number, got {value!r}")
    return number


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


def parse_lora_names(name: str, value: Any) -> tuple[str, ...]:
    """WanGP writes lists either as JSON lists or as comma-separated strings."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise InvalidParams(f"{name} must be a list of names or a comma-separated string, got {value!r}")


def parse_multipliers(name: str, value: Any) -> tuple[LoraWeight, ...]:
    """One entry per LoRA: a number (every phase) or WanGP's phase form ``"a;b"`` / ``"a;b;c"`` (one value per
    guidance phase; source/engine/phases.py). A list, or a string of entries separated by spaces (commas too
    when no entry uses the phase form: the older worker's comma-separated lists)."""
    if value is None or value == "":
        return ()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str):
        parts: list[Any] = value.split() if ";" in value else value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise InvalidParams(f"{name} must be a list or a string, got {type(value).__name__}")
    weights = []
    for part in parts:
        if isinstance(part, tuple):  # already parsed (a LoraWeight)
            weights.append(tuple(tuple(_float(name, x) for x in p) if isinstance(p, tuple) else _float(name, p)
                                 for p in part))
            continue
        phases = part.split(";") if isinstance(part, str) else [part]
        if len(phases) > 3:
            raise InvalidParams(f"{name}: {part!r} has {len(phases)} phases; at most 3 (one per guidance phase)")
        try:
            weight = tuple(tuple(float(x) for x in p.split(",")) if isinstance(p, str) and "," in p else float(p)
                           for p in phases)
        except (TypeError, ValueError):
            raise InvalidParams(f"{name}: {part!r} is not a number or 'a;b;c' phases (a phase may be a ramp "
                                f"'a,b')") from None
        values = [x for w in weight for x in (w if isinstance(w, tuple) else (w,))]
        if not all(math.isfinite(x) for x in values):
            raise InvalidParams(f"{name}: {part!r} is not a finite number")
        weights.append(weight)
    return tuple(weights)


def _steps_per_phase(name: str, value: Any) -> tuple[int, ...]:
    parts = value if isinstance(value, (list, tuple)) else [value]
    if not 1 <= len(parts) <= 3:
        raise InvalidParams(f"{name} must list 1 to 3 step counts (one per phase), got {value!r}")
    steps = tuple(_int_at_least(0)(name, part) for part in parts)
    if sum(steps) <= 0:
        raise InvalidParams(f"{name} {list(steps)} has no steps")
    return steps


def pair_loras(names: tuple[str, ...], weights: tuple[LoraWeight, ...]) -> tuple[tuple[str, LoraWeight], ...]:
    """Each LoRA with its weight; a LoRA without one gets 1.0. More weights than LoRAs is an error."""
    if len(weights) > len(names):
        raise InvalidParams(f"loras_multipliers has {len(weights)} values for {len(names)} activated_loras")
    return tuple(zip(names, weights + ((1.0,),) * (len(names) - len(weights)), strict=True))


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


def _media(name: str, value: Any) -> Any:
    """A guide or mask: a path, an image, a list of frames or an array; empty means none."""
    if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):
        return None
    return value


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidParams(f"{name} must be a string, got {type(value).__name__}")
    return value


def _seed(name: str, value: Any) -> int:
    seed = _int(name, value)
    if not -1 <= seed <= MAX_SEED:
        raise InvalidParams(f"{name} must be -1 (random) or an integer from 0 to {MAX_SEED}, got {value!r}")
    return seed


def _solver(name: str, value: Any) -> str:
    solver = str(value).strip().lower()
    if solver not in SOLVERS:
        raise InvalidParams(f"{name} {value!r} is not a known solver; choose one of {', '.join(SOLVERS)}")
    return solver


def parse_video_prompt_type(name: str, value: Any) -> str:
    """WanGP's letters for how a VACE model uses its inputs (see VIDEO_PROMPT_LETTERS)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidParams(f"{name} must be a string of letters such as 'VM' or 'PVI', got {value!r}")
    letters = value.strip().upper()
    unknown = sorted(set(letters) - set(VIDEO_PROMPT_LETTERS))
    if unknown:
        known = "; ".join(f"{k}: {v}" for k, v in VIDEO_PROMPT_LETTERS.items())
        raise InvalidParams(f"{name} {value!r}: unknown letter(s) {', '.join(unknown)}; known letters: {known}")
    if "P" in letters and "D" in letters:
        raise InvalidParams(f"{name} {value!r}: choose one control, P (pose) or D (depth), not both")
    return letters


# video_prompt_type for VACE, as WanGP users write it (only the letters implemented here are accepted).
VIDEO_PROMPT_LETTERS: Mapping[str, str] = MappingProxyType({
    "V": "use video_guide as is",
    "P": "use a pose video extracted from video_guide",
    "D": "use a depth video estimated from video_guide",
    "M": "use video_mask (without M the mask is ignored)",
    "I": "use image_refs as reference images (without I they are ignored)",
})


# WanGP's value forms: "" is off. rife2/rife4: 2x/4x frames (and fps); lanczos1.5/2: frame size x1.5/x2.
TEMPORAL_UPSAMPLING = ("", "rife2", "rife4")
SPATIAL_UPSAMPLING = ("", "lanczos1.5", "lanczos2")
STEP_CACHES = ("", "tea", "mag")
IMAGE_FORMATS = ("png", "jpeg", "webp")


def _image_format(name: str, value: Any) -> str:
    """png, jpeg (also jpg) or webp, as Reigh's rows name them."""
    text = str(value).strip().lower()
    return _choice(IMAGE_FORMATS)(name, "jpeg" if text == "jpg" else text)


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        text = "" if value is None else str(value).strip().lower()
        if text not in choices:
            shown = ", ".join(repr(c) for c in choices)
            raise InvalidParams(f"{name} {value!r} is not supported; choose one of {shown}")
        return text
    return described({"type": "string", "enum": list(choices)}, parse)


def _choice_int(choices: tuple[int, ...]) -> Callable[[str, Any], int]:
    def parse(name: str, value: Any) -> int:
        number = _int(name, value)
        if number not in choices:
            raise InvalidParams(f"{name} must be one of {', '.join(map(str, choices))}, got {number}")
        return number
    return described({"type": "integer", "enum": list(choices)}, parse)


def _in_range(low: float, high: float) -> Callable[[str, Any], float]:
    def parse(name: str, value: Any) -> float:
        number = _float(name, value)
        if not low <= number <= high:
            raise InvalidParams(f"{name} must be between {low:g} and {high:g}, got {number:g}")
        return number
    return described({"type": "number", "minimum": low, "maximum": high}, parse)


def _int_at_least(low: int) -> Callable[[str, Any], int]:
    def parse(name: str, value: Any) -> int:
        number = _int(name, value)
        if number < low:
            raise InvalidParams(f"{name} must be at least {low}, got {number}")
        return number
    return described({"type": "integer", "minimum": low}, parse)


def _switch(name: str, value: Any) -> int:
    """WanGP's on/off settings are 0/1 integers; booleans are taken too."""
    if isinstance(value, bool):
        return int(value)
    return _choice_int((0, 1))(name, value)


described({"anyOf": [{"type": "integer", "enum": [0, 1]}, {"type": "boolean"}]}, _switch)


def _layers(name: str, value: Any) -> tuple[int, ...]:
    """Block indices: a list, or a comma-separated string ("9" or "9,10")."""
    if value is None or value == "":
        return ()
    parts = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)):
        parts = [parts]
    return tuple(_int_at_least(0)(name, part) for part in parts)


def _bounded(maximum: int) -> Callable[[str, Any], int]:
    return described({"type": "integer", "minimum": 1, "maximum": maximum},
                     lambda name, value: _bounded_int(name, value, maximum))


def _optional(parse: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return described({"anyOf": [json_schema_of(parse), {"type": "null"}]},
                     lambda name, value: None if value is None else parse(name, value))


_LIST_OR_TEXT = {"anyOf": [{"type": "array", "items": _STRING}, _STRING]}
described(_STRING, _text)
described({"type": "string", "enum": [*IMAGE_FORMATS, "jpg"], "description": "the image file's format"}, _image_format)
described({"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 3,
           "description": "steps of each guidance phase (the exact split)"}, _steps_per_phase)
described(_NUMBER, _float)
described({"type": "integer", "minimum": -1, "maximum": MAX_SEED, "description": "-1: a random seed"}, _seed)
described({"type": "string", "enum": list(SOLVERS)}, _solver)
described({**_FILE, "description": "an image: " + _FILE["description"]}, _image)
described({"anyOf": [_FILE, {"type": "array", "items": _FILE}]}, _images)
described(_FILE, _media)
described({"type": "string", "pattern": f"^[{''.join(VIDEO_PROMPT_LETTERS)}]*$",
           "description": "; ".join(f"{k}: {v}" for k, v in VIDEO_PROMPT_LETTERS.items())}, parse_video_prompt_type)
described({**_LIST_OR_TEXT, "description": "LoRA names: a list or comma-separated text"}, parse_lora_names)
described({"anyOf": [_NUMBER, _STRING, {"type": "array", "items": {"anyOf": [_NUMBER, _STRING]}}],
           "description": "one multiplier per LoRA; 'high;low' gives one per expert"}, parse_multipliers)
described({"anyOf": [{"type": "array", "items": {"type": "integer", "minimum": 0}}, _STRING],
           "description": "block indices: a list or comma-separated text"}, _layers)


# The one parser per parameter: task params (at the edge), model JSON settings and system defaults all
# go through these, so a value means the same whichever tier it comes from.
PARSERS: Mapping[str, Callable[[str, Any], Any]] = MappingProxyType({
    "prompt": _text,
    "negative_prompt": described(_STRING, lambda name, value: "" if value is None else _text(name, value)),
    "resolution": described({"anyOf": [{"type": "string", "pattern": r"^\s*\d{1,5}\s*[xX*×]\s*\d{1,5}\s*$"},
                                       {"type": "array", "items": {"type": "integer", "minimum": 1,
                                                                   "maximum": MAX_SIDE},
                                        "minItems": 2, "maxItems": 2}],
                             "description": f"WIDTHxHEIGHT, e.g. '832x480'; at most {MAX_SIDE} on each side"},
                            lambda name, value: parse_resolution(value, name)),
    "video_length": _bounded(MAX_VIDEO_LENGTH),
    "num_inference_steps": _bounded(MAX_STEPS),
    "guidance_scale": _float,
    "guidance2_scale": _optional(_float),
    "guidance_phases": _optional(_choice_int((1, 2, 3))),
    "guidance3_scale": _optional(_float),
    "switch_threshold": _optional(_in_range(0.0, 1000.0)),
    "switch_threshold2": _optional(_in_range(0.0, 1000.0)),
    "model_switch_phase": _choice_int((1, 2)),
    "steps_per_phase": _optional(_steps_per_phase),
    "flow_shift": _optional(_float),
    "seed": _seed,
    "sample_solver": _solver,
    "embedded_guidance_scale": _float,
    "batch_size": _bounded(MAX_BATCH_SIZE),
    "image_start": _image,
    "image_end": _image,
    "image_refs": _images,
    "video_guide": _media,
    "video_mask": _media,
    "video_guide2": _media,
    "video_mask2": _media,
    "video_prompt_type": parse_video_prompt_type,
    "control_net_weight": _float,
    "control_net_weight2": _float,
    "activated_loras": parse_lora_names,
    "loras_multipliers": parse_multipliers,
    "temporal_upsampling": _choice(TEMPORAL_UPSAMPLING),
    "spatial_upsampling": _choice(SPATIAL_UPSAMPLING),
    "film_grain_intensity": _in_range(0.0, 1.0),
    "film_grain_saturation": _in_range(0.0, 1.0),
    "skip_steps_cache_type": _choice(STEP_CACHES),
    "skip_steps_multiplier": _in_range(1.0, 10.0),
    "skip_steps_start_step_perc": _in_range(0.0, 100.0),
    "cfg_star_switch": _switch,
    "cfg_zero_step": _int_at_least(-1),
    "apg_switch": _switch,
    "slg_switch": _switch,
    "slg_layers": _layers,
    "slg_start_perc": _in_range(0.0, 100.0),
    "slg_end_perc": _in_range(0.0, 100.0),
    "NAG_scale": _in_range(0.0, 100.0),
    "NAG_tau": _in_range(0.0, 100.0),
    "NAG_alpha": _in_range(0.0, 1.0),
    "RIFLEx_setting": _choice_int((0, 1, 2)),
    "sliding_window_size": _optional(_bounded(MAX_VIDEO_LENGTH)),
    "sliding_window_overlap": _int_at_least(0),
    "sliding_window_overlap_noise": _in_range(0.0, 100.0),
    "sliding_window_discard_last_frames": _int_at_least(0),
    "sliding_window_color_correction_strength": _in_range(0.0, 1.0),
    "output_format": described({"type": "string", "enum": [*IMAGE_FORMATS, "jpg"]}, _image_format),
    "image_mask": _image,
    "denoising_strength": _in_range(0.0, 1.0),
    "system_prompt": described({**_STRING, "description": "the text encoder's system prompt (empty: the model's)"},
                               lambda name, value: "" if value is None else _text(name, value)),
})
assert set(PARSERS) == set(SYSTEM_DEFAULTS), "every system default needs a parser, and only those"
assert all(hasattr(parse, "json_schema") for parse in PARSERS.values()), "every parser describes what it takes"


def parse_values(values: Mapping[str, Any], prefix: str = "", given_as: Mapping[str, str] | None = None
                 ) -> dict[str, Any]:
    """Known parameters parsed by their one parser; ``None`` means "not given" and is dropped. An error names
    a parameter as ``given_as`` says the row wrote it (an alias), else by its own name."""
    names = given_as or {}
    return {key: PARSERS[key](prefix + names.get(key, key), value) for key, value in values.items()
            if key in PARSERS and value is not None}


class Tier(str, Enum):
    SYSTEM = "system"
    MODEL = "model"
    TASK = "task"


@dataclass(frozen=True)
class ResolvedParameters:
    """The engine's input: typed parameters and, per parameter, the tier its value came from."""

    params: GenerationParams
    sources: Mapping[str, Tier]

    def table(self) -> str:
        """One line per parameter: name, value, tier (what ``--debug`` shows)."""
        width = max(len(name) for name in self.sources)
        rows = []
        for name, tier in sorted(self.sources.items()):
            shown = repr(value_of(self.params, name))
            rows.append(f"{name:<{width}}  {tier.value:<6}  {shown if len(shown) <= 80 else shown[:77] + '...'}")
        return "\n".join(rows)


    def json_values(self) -> dict[str, Any]:
        """Every resolved value as JSON (images and arrays named by their type)."""
        return {name: _json_safe(value_of(self.params, name)) for name in sorted(self.sources)}


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return f"<{type(value).__name__}>"


def value_of(params: GenerationParams, name: str) -> Any:
    return params.resolution if name == "resolution" else getattr(params, name)


def resolve(model_settings: Mapping[str, Any], task: Mapping[str, Any], *, model_type: str = "") -> ResolvedParameters:
    """System defaults < model JSON ``settings`` < the task's own (already parsed) values, resolved once.

    A model definition whose settings do not parse is the operator's error (DefinitionError), not the
    submitter's."""
    model = parse_settings(model_settings, model_type)
    merged: dict[str, Any] = {}
    sources: dict[str, Tier] = {}
    for tier, values in ((Tier.SYSTEM, _SYSTEM_PARSED), (Tier.MODEL, model), (Tier.TASK, task)):
        for key, value in values.items():
            if value is None:
                continue
            merged[key], sources[key] = value, tier
    for key in SYSTEM_DEFAULTS:
        if key not in merged:  # a default of None (no flow shift, no guide): "not set", from the system
            merged[key], sources[key] = None, Tier.SYSTEM
    return ResolvedParameters(build_params(merged), MappingProxyType(sources))


def parse_settings(settings: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """A model definition's ``settings`` through the same parsers; a bad value is a DefinitionError."""
    try:
        return parse_values(settings, prefix="settings.")
    except InvalidParams as exc:
        raise DefinitionError(f"model definition {model_type!r}: {exc}") from None


def build_params(values: Mapping[str, Any]) -> GenerationParams:
    """Parsed, merged values → GenerationParams, with the checks that span several parameters."""
    width, height = values["resolution"]
    loras = pair_loras(values["activated_loras"], values["loras_multipliers"])
    video_length, batch_size = values["video_length"], values["batch_size"]
    if width * height * video_length * batch_size > MAX_PIXELS_PER_CALL:
        raise InvalidParams(
            f"resolution {width}x{height} x video_length {video_length} x batch_size {batch_size} is "
            f"{width * height * video_length * batch_size:,} pixels; one call may produce at most "
            f"{MAX_PIXELS_PER_CALL:,}"
        )
    same_name = {f.name: values[f.name] for f in fields(GenerationParams) if f.name in values}
    return GenerationParams(**{
        **same_name, "width": width, "height": height, "image_refs": values["image_refs"] or (),
        "activated_loras": tuple(name for name, _ in loras), "loras_multipliers": tuple(w for _, w in loras),
    })


_SYSTEM_PARSED = parse_values(SYSTEM_DEFAULTS)


# Wan's VAE packs this many frames per latent after the first: a video length is FRAME_STEP * k + 1.
FRAME_STEP = 4

_ROUNDING = {"nearest": lambda step: step // 2, "down": lambda step: 0, "up": lambda step: step - 1}


def nearest_valid(value: int, step: int, *, offset: int = 0, minimum: int | None = None,
                  toward: Literal["nearest", "down", "up"] = "nearest") -> int:
    """The value of the form ``step * k + offset`` nearest to ``value`` (halfway rounds up; ``toward`` "down"
    or "up": the largest not above it, the smallest not below it), at least ``minimum``: how WanGP adjusts a
    requested length (4k+1 frames) or size (a multiple of 16) rather than refusing it. The one rounding rule
    for frame counts and resolutions."""
    lowest = minimum if minimum is not None else step + offset
    rounded = (value - offset + _ROUNDING[toward](step)) // step * step + offset
    return max(lowest, rounded)


def valid_frame_count(value: int, *, step: int = FRAME_STEP, toward: Literal["nearest", "down", "up"] = "nearest",
                      minimum: int = 1) -> int:
    """``value`` as a length a video pipeline makes (``step * k + 1`` frames), rounded ``toward``."""
    return nearest_valid(value, step, offset=1, minimum=minimum, toward=toward)
