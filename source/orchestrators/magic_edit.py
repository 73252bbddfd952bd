"""magic_edit: edit one image with a prompt through the local Flux Kontext model (no third-party API)."""

from __future__ import annotations

from pydantic import Field, model_validator

from source.errors import InvalidParams
from source.generation.conversion import lift_orchestrator_details
from source.generation.handler import generate, outcome_of
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import TaskParams, parse_params, takes
from source.orchestrators.checks import check_model, check_resolution
from source.task_types import BY_NAME

DEFAULT_PROMPT = "Make a shot in the same scene from a different angle"
DEFAULT_RESOLUTION = "768x576"
DEFAULT_MODEL = BY_NAME["magic_edit"].default_model  # what a worker's --models must allow for a row naming none
# The in-scene LoRA the older worker used (huggingface.co/peteromallet/Flux-Kontext-InScene); WanGP ships none.
# Any file of the model's LoRA folder named InScene-* is taken (this one first), unless a name is configured.
IN_SCENE_LORA = "InScene-v1.0.safetensors"
IN_SCENE_PREFIX = "InScene-"
IN_SCENE_SOURCE = "https://huggingface.co/peteromallet/Flux-Kontext-InScene/resolve/main/InScene-v1.0.safetensors"
KONTEXT_SPATIAL_MULTIPLE = 16


class MagicEditParams(TaskParams):
    image_url: str | None = None
    image_path: str | None = None
    prompt: str = DEFAULT_PROMPT
    resolution: str | list[int] = DEFAULT_RESOLUTION
    seed: int = -1
    in_scene: bool = False
    # A LoRA file name in the model's LoRA folder to use for in_scene (else the worker's --in-scene-lora).
    in_scene_lora: str | None = None
    model: str | None = None
    model_name: str | None = None
    num_inference_steps: int | None = Field(None, ge=1, le=200)
    steps: int | None = Field(None, ge=1, le=200)

    @model_validator(mode="after")
    def _one_image(self) -> MagicEditParams:
        if not (self.image_url or self.image_path):
            raise ValueError("give the image to edit as image_url (http/https or a local path) or image_path")
        return self


@takes(MagicEditParams, translated=True)
def handle_magic_edit(ctx: TaskContext) -> TaskOutcome:
    lifted = lift_orchestrator_details(ctx.params)
    p = parse_params(MagicEditParams, lifted.params)
    model = check_model("params.model", p.model or p.model_name or DEFAULT_MODEL, ("flux_kontext",),
                        "magic_edit (image editing)")
    adjusted: dict = {}
    width, height = check_resolution("params.resolution", p.resolution, KONTEXT_SPATIAL_MULTIPLE, adjusted)
    request: dict = {
        "model": model, "prompt": p.prompt.strip() or DEFAULT_PROMPT, "image_start": p.image_url or p.image_path,
        "resolution": f"{width}x{height}", "seed": p.seed, "video_length": 1,
    }
    steps = p.num_inference_steps or p.steps
    if steps:
        request["num_inference_steps"] = steps
    in_scene_lora = in_scene_lora_for(model, p.in_scene_lora or ctx.settings.in_scene_lora) if p.in_scene else None
    if in_scene_lora:
        request["activated_loras"] = [in_scene_lora]
        request["loras_multipliers"] = ["1.0"]
    outcome = outcome_of(generate(ctx, "flux", request))
    result = {**outcome.result, "prompt": request["prompt"], "in_scene_lora": in_scene_lora}
    if ignored := p.ignored_params():
        result["ignored_params"] = lifted.ignored(ignored)
    if adjusted:
        result["adjusted"] = adjusted
    return TaskOutcome(output_path=outcome.output_path, result=result)


def in_scene_lora_for(model: str, configured: str | None) -> str:
    """The in-scene LoRA file of ``model``'s LoRA folder: ``configured`` when named, else an ``InScene-*``
    file; InvalidParams saying what to do when there is none (the edit is never run silently without it)."""
    from source.engine.loras import list_loras, lora_folder, model_lora_folder

    folder = model_lora_folder(model)
    names = [path.name for path in list_loras(folder)]
    if configured:
        if configured in names:
            return configured
        raise InvalidParams(f"params.in_scene: the configured in-scene LoRA {configured!r} is not in "
                            f"{lora_folder(folder)}; put it there, or send in_scene: false")
    found = sorted((n for n in names if n.lower().startswith(IN_SCENE_PREFIX.lower())),
                   key=lambda n: (n != IN_SCENE_LORA, n))
    if not found:
        raise InvalidParams(f"params.in_scene is true but {lora_folder(folder)} has no in-scene LoRA "
                            f"({IN_SCENE_PREFIX}*.safetensors); download {IN_SCENE_SOURCE} there, name another file "
                            "with params.in_scene_lora or the worker's --in-scene-lora, or send in_scene: false")
    return found[0]
