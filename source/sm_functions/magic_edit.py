"""magic_edit: edit one image with a prompt through the local Flux Kontext model (no third-party API)."""

from __future__ import annotations

from pydantic import Field, model_validator

from source.generation import generate, outcome_of
from source.params import TaskParams, parse_params
from source.sm_functions.checks import check_model, check_resolution
from source.task_context import TaskContext, TaskOutcome

DEFAULT_PROMPT = "Make a shot in the same scene from a different angle"
DEFAULT_RESOLUTION = "768x576"
DEFAULT_MODEL = "flux_kontext"
# A LoRA file in the model's LoRA folder whose name contains this (any case) is the in-scene LoRA.
IN_SCENE_LORA_MARK = "in_scene"
KONTEXT_SPATIAL_MULTIPLE = 16


class MagicEditParams(TaskParams):
    image_url: str | None = None
    image_path: str | None = None
    prompt: str = DEFAULT_PROMPT
    resolution: str | list[int] = DEFAULT_RESOLUTION
    seed: int = -1
    in_scene: bool = False
    model: str | None = None
    model_name: str | None = None
    num_inference_steps: int | None = Field(None, ge=1, le=200)
    steps: int | None = Field(None, ge=1, le=200)

    @model_validator(mode="after")
    def _one_image(self) -> MagicEditParams:
        if not (self.image_url or self.image_path):
            raise ValueError("give the image to edit as image_url (http/https or a local path) or image_path")
        return self


def handle_magic_edit(ctx: TaskContext) -> TaskOutcome:
    p = parse_params(MagicEditParams, ctx.params)
    model = check_model("params.model", p.model or p.model_name or DEFAULT_MODEL, ("flux_kontext",),
                        "magic_edit (image editing)")
    width, height = check_resolution("params.resolution", p.resolution, KONTEXT_SPATIAL_MULTIPLE)
    request: dict = {
        "model": model, "prompt": p.prompt.strip() or DEFAULT_PROMPT, "image_start": p.image_url or p.image_path,
        "resolution": f"{width}x{height}", "seed": p.seed, "video_length": 1,
    }
    steps = p.num_inference_steps or p.steps
    if steps:
        request["num_inference_steps"] = steps
    in_scene_lora = _in_scene_lora(model) if p.in_scene else None
    if p.in_scene and in_scene_lora is None:
        ctx.log.warning("in_scene_lora_unavailable", model=model, hint=f"put a *{IN_SCENE_LORA_MARK}* LoRA file "
                        "in the model's LoRA folder")
    if in_scene_lora:
        request["activated_loras"] = [in_scene_lora]
        request["loras_multipliers"] = ["1.0"]
    outcome = outcome_of(generate(ctx, "flux", request))
    result = {**outcome.result, "prompt": request["prompt"], "in_scene_lora": in_scene_lora}
    if ignored := p.ignored_params():
        result["ignored_params"] = ignored
    return TaskOutcome(output_path=outcome.output_path, result=result)


def _in_scene_lora(model: str) -> str | None:
    from source.engine.loras import list_loras, model_lora_folder

    return next((path.name for path in list_loras(model_lora_folder(model)) if IN_SCENE_LORA_MARK in path.name.lower()),
                None)
