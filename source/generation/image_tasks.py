"""Reigh's image task types on our own GPUs: Qwen-Image (t2i, 2512, style/subject references, edit, inpaint,
annotated edit, two-pass hires) and Z-Image Turbo (t2i, img2img). Each row, with Reigh's field names, becomes
engine parameters and the LoRAs reigh-worker applies for that task type (the definition's ``task_loras`` roles,
at the strengths the row asks), then one generation (two for hires) through the worker's queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image
from pydantic import Field, model_validator

from source.engine.model_defs import ModelDefinition, load_model_def
from source.engine.params import MAX_SIDE
from source.errors import InvalidParams
from source.generation.handler import generate
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import TaskParams, parse_params, takes
from source.task_files.fetch import resolve_input
from source.task_types import MODEL_ALIASES
from source.task_types import claim_model as default_model

# Reigh's model names (its imageGeneration / magicEdit builders) → our definitions; any other value is taken as a
# definition name (a tiny counterpart in tests, a box's own definition) and checked for its architecture.
REIGH_MODELS = MODEL_ALIASES
EDIT_MODELS = {"qwen-edit": "qwen_image_edit", "qwen-edit-2509": "qwen_image_edit_2509",
               "qwen-edit-2511": "qwen_image_edit_2511"}
EDIT_ARCHITECTURES = ("qwen_image_edit", "qwen_image_edit_plus")

# reigh-worker's system prompts (source/models/model_handlers/qwen_prompts.py), by task type.
SYSTEM_PROMPTS = {
    "qwen_image": "You are a professional image generator. Create high-quality, detailed images based on the "
                  "description provided.",
    "qwen_image_hires": "You are a professional image generator. Create high-quality, detailed images based on the "
                        "description.",
    "qwen_image_2512": "You are an expert image generator specializing in photorealistic images with accurate text "
                       "rendering. Pay careful attention to any text, typography, or lettering in the prompt and "
                       "render it clearly and legibly.",
    "qwen_image_edit": "You are a professional image editor. Analyze the input image carefully, then apply the "
                       "requested modifications precisely while maintaining visual coherence and image quality.",
    "image_inpaint": "You are an expert at inpainting. The green areas indicate regions to fill. Analyze the "
                     "context and generate natural content based on the description.",
    "annotated_image_edit": "You are an expert at interpreting visual annotations. Analyze the green annotations "
                            "and modify the marked areas according to instructions.",
}
# reigh-worker's Lightning strength (first pass; second pass) per task type.
LIGHTNING = {"qwen_image": (1.0, 1.0), "qwen_image_2512": (1.0, 1.0), "qwen_image_edit": (0.85, 0.0),
             "qwen_image_style": (0.85, 0.0), "image_inpaint": (0.75, 0.0), "annotated_image_edit": (0.75, 0.0),
             "qwen_image_hires": (0.45, 0.0)}
# qwen_image_hires's base sizes for an aspect-ratio resolution (reigh-worker's, from ComfyUI's workflow).
HIRES_BASES = {"1:1": "1328x1328", "16:9": "1664x928", "9:16": "928x1664", "4:3": "1472x1104", "3:4": "1104x1472",
               "3:2": "1584x1056", "2:3": "1056x1584"}
QWEN_MAX_SIDE, QWEN_2512_MAX_SIDE = 1200, 2512
UPSCALE_METHODS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS,
                   "nearest": Image.NEAREST}
MAX_OUTPUTS = 16


class ImageTaskParams(TaskParams):
    """Fields every Reigh image row may carry. Lineage fields are Reigh's own bookkeeping (it reads them back
    when the task completes); they are accepted here and change nothing in the generation."""

    prompt: str = ""
    negative_prompt: str | None = None
    seed: int = Field(-1, ge=-1, le=2**63 - 1)
    resolution: str | None = None
    steps: int | None = Field(None, ge=1, le=200)
    num_inference_steps: int | None = Field(None, ge=1, le=200)
    guidance_scale: float | None = None
    output_format: str = "png"
    model: str | None = None
    system_prompt: str | None = None
    additional_loras: dict[str, float] = {}
    loras: list[dict[str, Any]] = []
    lightning_lora_strength: float | None = None
    lightning_lora_strength_phase_1: float | None = None
    lightning_lora_strength_phase_2: float | None = None
    hires_scale: float | None = Field(None, gt=1.0, le=4.0)
    hires_steps: int = Field(6, ge=1, le=200)
    hires_denoise: float = Field(0.5, gt=0.0, le=1.0)
    hires_upscale_method: Literal["bicubic", "bilinear", "lanczos", "nearest"] = "bicubic"
    # lineage (Reigh's)
    task_id: str | None = None
    shot_id: str | None = None
    generation_id: str | None = None
    based_on: str | None = None
    parent_generation_id: str | None = None
    source_variant_id: str | None = None
    create_as_generation: bool | None = None
    tool_type: str | None = None
    timeline_placement: Any = None
    placement_intent: Any = None
    add_in_position: bool | None = None

    @property
    def step_count(self) -> int | None:
        return self.num_inference_steps or self.steps

    def lora_urls(self) -> dict[str, float]:
        """``additional_loras`` plus Reigh's ``loras`` lists ({path, scale} or {url, strength})."""
        found = dict(self.additional_loras)
        for entry in self.loras:
            source = entry.get("path") or entry.get("url")
            if not isinstance(source, str) or not source:
                raise InvalidParams(f"params.loras: each entry needs a path or url, got {entry!r}")
            found[source] = float(entry.get("scale", entry.get("strength", 1.0)))
        return found


class EditParams(ImageTaskParams):
    image: str | None = None
    image_url: str | None = None
    qwen_edit_model: str = "qwen-edit"

    @property
    def source(self) -> str:
        source = self.image or self.image_url
        if not source:
            raise InvalidParams("params: give the image to edit as image (or image_url)")
        return source


class MaskedEditParams(EditParams):
    mask_url: str
    num_generations: int = Field(1, ge=1, le=MAX_OUTPUTS)


class StyleParams(ImageTaskParams):
    style_reference_image: str | None = None
    subject_reference_image: str | None = None
    style_reference_strength: float = Field(0.0, ge=0.0, le=2.0)
    subject_strength: float = Field(0.0, ge=0.0, le=2.0)
    scene_reference_strength: float = Field(0.0, ge=0.0, le=2.0)
    in_this_scene_strength: float | None = None  # Reigh also sends it as scene_reference_strength
    subject_description: str = ""
    in_this_scene: bool = False
    reference_mode: str | None = None
    qwen_edit_model: str = "qwen-edit"

    @model_validator(mode="after")
    def _one_reference(self) -> StyleParams:
        if not (self.style_reference_image or self.subject_reference_image):
            raise ValueError("give style_reference_image (and/or subject_reference_image)")
        return self


class ZImageI2IParams(ImageTaskParams):
    image: str | None = None
    image_url: str | None = None
    strength: float | None = Field(None, ge=0.0, le=1.0)
    denoising_strength: float | None = Field(None, ge=0.0, le=1.0)
    num_images: int = Field(1, ge=1, le=MAX_OUTPUTS)
    image_size: str | dict[str, int] = "auto"


@dataclass
class Plan:
    """One generation to run: the definition, the engine parameters, and what the result should record."""

    definition: ModelDefinition
    request: dict[str, Any]
    loras: dict[str, float]
    record: dict[str, Any]


def _definition(name: str, architectures: tuple[str, ...], what: str) -> ModelDefinition:
    definition = load_model_def(name)
    if definition.architecture not in architectures:
        raise InvalidParams(f"params.model: {name!r} is a {definition.architecture} model; {what} needs one of "
                            f"{', '.join(architectures)}")
    return definition


def _hub_url(file: str) -> str:
    """hf://owner/repo/path → the resolve URL the LoRA fetcher takes (a folder file name stays as it is)."""
    if not file.startswith("hf://"):
        return file
    owner, repo, *path = file[len("hf://"):].split("/")
    return f"https://huggingface.co/{owner}/{repo}/resolve/main/{'/'.join(path)}"


def _roles(definition: ModelDefinition, wanted: dict[str, float], record: dict[str, Any]) -> dict[str, float]:
    """The definition's LoRA of each wanted role at its strength (0 = off); a role the definition lacks is
    recorded in the result as not applied."""
    loras, missing = {}, []
    for role, strength in wanted.items():
        if strength == 0:
            continue
        if role not in definition.task_loras:
            missing.append(role)
            continue
        loras[_hub_url(definition.task_loras[role][0])] = strength
    record["task_loras"] = {role: wanted[role] for role in wanted if wanted[role] and role not in missing}
    if missing:
        record["task_loras_not_in_definition"] = missing
    return loras


def _lightning(p: ImageTaskParams, task_type: str) -> tuple[float, float]:
    first, second = LIGHTNING[task_type]
    if p.lightning_lora_strength is not None:
        first = p.lightning_lora_strength
    if p.lightning_lora_strength_phase_1 is not None:
        first = p.lightning_lora_strength_phase_1
    if p.lightning_lora_strength_phase_2 is not None:
        second = p.lightning_lora_strength_phase_2
    return first, second


def capped(resolution: str, max_side: int) -> str:
    """reigh-worker's cap: the longest side at most ``max_side``, the aspect kept."""
    from source.generation.conversion import normalise_resolution

    width, height = (int(v) for v in normalise_resolution(resolution).split("x"))
    if max(width, height) > max_side:
        ratio = min(max_side / width, max_side / height)
        width, height = int(width * ratio), int(height * ratio)
    return f"{width}x{height}"


def _common(p: ImageTaskParams, definition: ModelDefinition, task_type: str, *, count: int = 1) -> dict[str, Any]:
    prompt = p.prompt.strip() or " "  # reigh-worker lets edits and references run on an empty prompt
    request: dict[str, Any] = {"model": definition.model_type, "prompt": prompt, "seed": p.seed,
                               "video_length": count, "output_format": p.output_format,
                               "system_prompt": p.system_prompt or SYSTEM_PROMPTS.get(task_type, "")}
    for key, value in (("negative_prompt", p.negative_prompt), ("num_inference_steps", p.step_count),
                       ("guidance_scale", p.guidance_scale)):
        if value is not None:
            request[key] = value
    return request


def _reference(ctx: TaskContext, value: str, name: str) -> str:
    return str(resolve_input(value, name, ctx.inputs, kind="image"))


# ---- plans per task type ------------------------------------------------------------------------------------
def plan_text_to_image(ctx: TaskContext, task_type: str) -> tuple[Plan, ImageTaskParams]:
    p = parse_params(ImageTaskParams, ctx.params)
    fallback = default_model(task_type)
    name = REIGH_MODELS.get(p.model or "", p.model or fallback)
    architectures = ("z_image",) if task_type == "z_image_turbo" else ("qwen_image",)
    definition = _definition(name, architectures, task_type)
    request = _common(p, definition, task_type)
    resolution = p.resolution or ("1328x1328" if task_type == "qwen_image_hires" else "1024x1024")
    if task_type == "qwen_image_hires":
        resolution = HIRES_BASES.get(resolution, resolution)
    elif definition.architecture == "qwen_image":
        resolution = capped(resolution, QWEN_2512_MAX_SIDE if task_type == "qwen_image_2512" else QWEN_MAX_SIDE)
    request["resolution"] = resolution
    if task_type == "qwen_image_hires":
        request.setdefault("num_inference_steps", 10)
        request.setdefault("guidance_scale", 1.0)
    record: dict[str, Any] = {}
    loras = p.lora_urls()
    if definition.architecture == "qwen_image":
        loras |= _roles(definition, {"lightning": _lightning(p, task_type)[0]}, record)
    return Plan(definition, request, loras, record), p


def plan_edit(ctx: TaskContext, task_type: str) -> tuple[Plan, ImageTaskParams]:
    p = parse_params(MaskedEditParams if task_type in ("image_inpaint", "annotated_image_edit") else EditParams,
                     ctx.params)
    definition = _definition(EDIT_MODELS.get(p.model or p.qwen_edit_model, p.model or p.qwen_edit_model),
                             EDIT_ARCHITECTURES, task_type)
    count = getattr(p, "num_generations", 1)
    request = _common(p, definition, task_type, count=count)
    source = _reference(ctx, p.source, "image" if p.image else "image_url")
    if p.resolution:
        request["resolution"] = capped(p.resolution, QWEN_MAX_SIDE)
    else:
        with Image.open(source) as image:  # the source's own size, capped as reigh-worker caps it
            request["resolution"] = capped(f"{image.width}x{image.height}", QWEN_MAX_SIDE)
    record: dict[str, Any] = {}
    roles = {"lightning": _lightning(p, task_type)[0]}
    if task_type == "image_inpaint":
        request["image_start"], request["image_mask"] = source, _reference(ctx, p.mask_url, "mask_url")
        roles["inpaint"] = 1.0
    elif task_type == "annotated_image_edit":
        request["image_start"] = str(annotated(ctx, source, _reference(ctx, p.mask_url, "mask_url")))
        roles["annotate"] = 1.0
    else:
        request["image_start"] = source
    return Plan(definition, request, p.lora_urls() | _roles(definition, roles, record), record), p


def annotated(ctx: TaskContext, source: str, mask: str):
    """The source with the annotation mask painted green (reigh-worker's composite), in the task's work folder."""
    from source.engine.families.qwen import green_composite
    from source.media.load import load_image

    image = load_image(source, "image_url")
    path = ctx.work_dir / "annotated.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    green_composite(image, load_image(mask, "mask_url", image.size)).save(path)
    return path


def style_prompt(p: StyleParams) -> str:
    """reigh-worker's prompt for style/subject references: a preamble per active reference, then the prompt."""
    parts = []
    if p.style_reference_strength > 0:
        parts.append("In the style of this image,")
    if p.subject_strength > 0 and p.subject_description:
        verb = "make" if parts else "Make"
        where = " in this scene" if p.in_this_scene else ""
        parts.append(f"{verb} an image of this {p.subject_description}{where}:")
    return " ".join([*parts, p.prompt]) if parts else p.prompt


def style_system_prompt(p: StyleParams, scene: float) -> str:
    subject, style = p.subject_strength > 0, p.style_reference_strength > 0
    if subject and style and scene > 0:
        return "You are an expert at creating images with consistent subjects, styles, and scenes."
    if subject and style:
        return "You are an expert at creating images with consistent subjects and styles."
    if style:
        return "You are an expert at applying artistic styles consistently."
    return "You are an expert at image-to-image generation."


def plan_style(ctx: TaskContext, task_type: str) -> tuple[Plan, ImageTaskParams]:
    p = parse_params(StyleParams, ctx.params)
    # Reigh's row names the text-to-image model ("qwen-image"); references need an edit model (reigh-worker's).
    name = p.model if p.model and p.model not in REIGH_MODELS else EDIT_MODELS.get(p.qwen_edit_model,
                                                                                    p.qwen_edit_model)
    definition = _definition(name, EDIT_ARCHITECTURES, task_type)
    request = _common(p, definition, task_type)
    request["prompt"] = style_prompt(p).strip() or " "
    scene = p.scene_reference_strength or p.in_this_scene_strength or 0.0
    request["system_prompt"] = p.system_prompt or style_system_prompt(p, scene)
    request["resolution"] = capped(p.resolution or "1024x1024", QWEN_MAX_SIDE)
    references = [r for r in dict.fromkeys((p.style_reference_image, p.subject_reference_image)) if r]
    if definition.architecture == "qwen_image_edit":
        references = references[:1]  # one image only: the style reference, as reigh-worker sends it
    request["image_refs"] = [_reference(ctx, r, "style_reference_image") for r in references]
    record: dict[str, Any] = {"references": len(references)}
    roles = {"lightning": _lightning(p, task_type)[0], "style": p.style_reference_strength,
             "subject": p.subject_strength, "scene": scene}
    return Plan(definition, request, p.lora_urls() | _roles(definition, roles, record), record), p


def plan_z_image_i2i(ctx: TaskContext, task_type: str) -> tuple[Plan, ImageTaskParams]:
    p = parse_params(ZImageI2IParams, ctx.params)
    definition = _definition(REIGH_MODELS.get(p.model or "", p.model or default_model(task_type)), ("z_image",),
                             task_type)
    request = _common(p, definition, task_type, count=p.num_images)
    source = p.image or p.image_url
    if not source:
        raise InvalidParams("params: give the image to start from as image_url (or image)")
    request["image_start"] = _reference(ctx, source, "image_url" if p.image_url else "image")
    strength = p.denoising_strength if p.denoising_strength is not None else p.strength
    request["denoising_strength"] = 0.7 if strength is None else strength
    request["resolution"] = p.resolution or _image_size(p.image_size, request["image_start"], definition)
    return Plan(definition, request, p.lora_urls(), {}), p


def _image_size(value: str | dict[str, int], source: str, definition: ModelDefinition) -> str:
    """``auto``: the source's aspect at the area of the model's default resolution (1 megapixel for Z-Image, as
    reigh-worker sizes it); ``{"width", "height"}`` or ``"WxH"`` as given."""
    if isinstance(value, dict):
        return f"{value.get('width')}x{value.get('height')}"
    if value != "auto":
        return value
    from source.engine.params import parse_resolution

    default_width, default_height = parse_resolution(definition.settings.get("resolution", "1024x1024"))
    with Image.open(source) as image:
        scale = math.sqrt(default_width * default_height / (image.width * image.height))
        width, height = (min(MAX_SIDE, max(16, round(side * scale))) for side in image.size)
    return f"{width}x{height}"


PLANS = {"qwen_image": plan_text_to_image, "qwen_image_2512": plan_text_to_image,
         "qwen_image_hires": plan_text_to_image, "z_image_turbo": plan_text_to_image,
         "qwen_image_edit": plan_edit, "image_inpaint": plan_edit, "annotated_image_edit": plan_edit,
         "qwen_image_style": plan_style, "z_image_turbo_i2i": plan_z_image_i2i}
# The params model each plan parses its row with (what /openapi.json publishes and submissions are checked against).
PARAMS = {"qwen_image": ImageTaskParams, "qwen_image_2512": ImageTaskParams, "qwen_image_hires": ImageTaskParams,
          "z_image_turbo": ImageTaskParams, "qwen_image_edit": EditParams, "image_inpaint": MaskedEditParams,
          "annotated_image_edit": MaskedEditParams, "qwen_image_style": StyleParams,
          "z_image_turbo_i2i": ZImageI2IParams}
assert set(PARAMS) == set(PLANS)


# ---- the handler --------------------------------------------------------------------------------------------
@takes(PARAMS)
def handle_image_task(ctx: TaskContext) -> TaskOutcome:
    task_type = ctx.task.task_type
    plan, p = PLANS[task_type](ctx, task_type)
    hires = p.hires_scale or (2.0 if task_type == "qwen_image_hires" else None)
    if hires and plan.definition.architecture in EDIT_ARCHITECTURES:
        raise InvalidParams(f"params.hires_scale: the two-pass hires runs on text-to-image models; {task_type} on "
                            f"{plan.definition.model_type} edits an image, send it without hires_scale")
    first = generate(ctx, task_type, {**plan.request, "additional_loras": plan.loras})
    outputs, result = list(first.paths), {**first.summary(), **plan.record}
    if hires:
        outputs, result["hires"] = _second_pass(ctx, task_type, plan, p, first, hires)
    if ignored := p.ignored_params():
        result["ignored_params"] = sorted({*result.get("ignored_params", ()), *ignored})
    result["outputs"] = [str(path) for path in outputs]
    return TaskOutcome(output_path=outputs[0], result=result)


def _second_pass(ctx: TaskContext, task_type: str, plan: Plan, p: ImageTaskParams, first, scale: float):
    """reigh-worker's hires fix: each first-pass image enlarged by ``scale`` and refined by ``hires_steps`` of
    image-to-image at ``hires_denoise`` (in pixel space: our pipelines take images, not latents), the Lightning
    LoRA at its second-pass strength."""
    width, height = round(first.width * scale), round(first.height * scale)
    loras = dict(plan.loras)
    lightning = plan.definition.task_loras.get("lightning")
    if lightning:
        loras.pop(_hub_url(lightning[0]), None)
        if (strength := _lightning(p, task_type)[1]) > 0:
            loras[_hub_url(lightning[0])] = strength
    outputs = []
    for index, path in enumerate(first.paths):
        enlarged = ctx.work_dir / f"hires_{index}.png"
        enlarged.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.convert("RGB").resize((width, height), UPSCALE_METHODS[p.hires_upscale_method]).save(enlarged)
        second = generate(ctx, task_type, {**plan.request, "video_length": 1, "image_start": str(enlarged),
                                           "denoising_strength": p.hires_denoise, "resolution": f"{width}x{height}",
                                           "num_inference_steps": p.hires_steps, "additional_loras": loras,
                                           "seed": first.seed + index})
        outputs.extend(second.paths)
        path.unlink(missing_ok=True)  # the first pass is an intermediate: only the refined image is an output
    return outputs, {"scale": scale, "steps": p.hires_steps, "denoise": p.hires_denoise,
                     "upscale_method": p.hires_upscale_method, "base_resolution": f"{first.width}x{first.height}",
                     "resolution": f"{width}x{height}"}
