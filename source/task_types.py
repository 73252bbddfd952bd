"""Every task type, one record each: its handler, default model, output kind, aliases, older shape and what a
worker must be able to load to claim it. routing.py, generation.conversion, orchestrators.older_shapes and the
worker's capabilities read their tables from here; the SQL that names task types is checked against it
(tests/foundation/test_task_types.py).

Adding a task type is one edit here, one record in TASK_TYPES:
- a direct generation (runs through HeadlessTaskQueue with a model of a defaults/<model>.json definition):
  ``generation("qwen_image", "qwen_image")``, with ``output=Output.SINGLE_IMAGE`` when it always makes one image;
- any other handler: ``TaskType("my_type", "source.handlers.my_type:handle_my_type")``, with ``default_model``
  when it generates with a model of its own, or ``generates_as`` when it runs one generation of another type;
then a test of the handler. Nothing else names the type (the SQL's lists are only for older-shape rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

# The handler of every direct-generation task type (imported on first use: see routing.resolve_handler).
GENERATION = "source.generation.handler:handle_generation"
_TRAVEL = "source.orchestrators.travel"
_PERSPECTIVE = "source.orchestrators.different_perspective"
_JOIN = "source.orchestrators.join_clips"
_HANDLERS = "source.handlers"
_IMAGES = "source.generation.image_tasks"


class Output(StrEnum):
    AS_MODEL = "as_model"  # what the model makes: a video, or video_length images for an image model
    SINGLE_IMAGE = "single_image"  # one image whatever the model's default length (video_length forced to 1)


@dataclass(frozen=True)
class OlderShape:
    """The older Headless-Wan2GP worker's shape of a child row (translated in orchestrators/older_shapes.py)."""

    mark: str  # the key that marks the older shape (our payloads never carry it)
    # The orchestrator task type whose row this older final child completes (the older worker left that row
    # In Progress, lease-less, until then: the lease reclaim must leave it alone while this child is pending).
    completes: str | None = None


@dataclass(frozen=True)
class TaskType:
    name: str
    # "module:function"; None = part of the contract (DESIGN.md), handler not built yet.
    handler: str | None
    # The model a row of this type runs when it names none (``params.model`` wins); for a direct generation,
    # the model of its defaults/<model>.json definition.
    default_model: str | None = None
    # An edit that runs one generation of that other task type (and so needs that type's default model).
    generates_as: str | None = None
    aliases: tuple[str, ...] = ()  # other names existing producers still insert
    output: Output = Output.AS_MODEL
    older_shape: OlderShape | None = None

    @property
    def direct_generation(self) -> bool:
        return self.handler == GENERATION


def generation(name: str, model: str, **fields: object) -> TaskType:
    return TaskType(name, GENERATION, default_model=model, **fields)  # type: ignore[arg-type]


TASK_TYPES: tuple[TaskType, ...] = (
    # Direct generation (through HeadlessTaskQueue)
    generation("generate_video", "t2v", aliases=("wgp", "standard_wgp_task")),
    generation("t2v", "t2v"),
    generation("t2v_22", "t2v_2_2"),
    generation("wan_2_2_t2i", "t2v_2_2", output=Output.SINGLE_IMAGE),
    generation("i2v", "i2v"),
    generation("i2v_22", "i2v_2_2"),
    generation("vace", "vace_14B_cocktail_2_2"),
    generation("vace_21", "vace_14B"),
    generation("vace_22", "vace_14B_cocktail_2_2"),
    generation("flux", "flux"),
    generation("hunyuan", "hunyuan"),
    generation("ltxv", "ltxv_13B"),
    generation("ltx2", "ltx2_19B"),  # video with its generated soundtrack
    generation("single_image", "t2v", output=Output.SINGLE_IMAGE),  # the older worker's one-image generation
    # Orchestrators and their children
    TaskType("travel_orchestrator", f"{_TRAVEL}:handle_travel_orchestrator"),
    # Reigh's turbo travel: the same payload, run as a travel (as reigh-worker does)
    TaskType("wan_2_2_i2v", f"{_TRAVEL}:handle_travel_orchestrator"),
    # Reigh regenerating one segment of a travel (source/orchestrators/individual_segment.py)
    TaskType("individual_travel_segment", "source.orchestrators.individual_segment:handle_individual_travel_segment",
             default_model="wan_2_2_i2v_lightning_baseline_2_2_2"),
    TaskType("travel_segment", f"{_TRAVEL}:handle_travel_segment",
             older_shape=OlderShape("full_orchestrator_payload")),
    TaskType("travel_stitch", f"{_TRAVEL}:handle_travel_stitch",
             older_shape=OlderShape("full_orchestrator_payload", completes="travel_orchestrator")),
    TaskType("different_perspective_orchestrator", f"{_PERSPECTIVE}:handle_different_perspective_orchestrator"),
    TaskType("dp_final_gen", f"{_PERSPECTIVE}:handle_dp_final_gen",
             older_shape=OlderShape("dp_orchestrator_payload", completes="different_perspective_orchestrator")),
    TaskType("magic_edit", "source.orchestrators.magic_edit:handle_magic_edit", default_model="flux_kontext"),
    TaskType("join_clips_orchestrator", f"{_JOIN}:handle_join_clips_orchestrator"),
    TaskType("join_clips_segment", f"{_JOIN}:handle_join_clips_segment", generates_as="vace"),
    TaskType("join_final_stitch", f"{_JOIN}:handle_join_final_stitch"),
    TaskType("edit_video_orchestrator", "source.orchestrators.edit_video:handle_edit_video_orchestrator"),
    # VACE edits of existing videos (source/handlers/vace_edit.py)
    TaskType("join_clips", f"{_HANDLERS}.vace_edit:handle_join_clips", generates_as="vace"),
    TaskType("inpaint_frames", f"{_HANDLERS}.vace_edit:handle_inpaint_frames", generates_as="vace"),
    # Reigh's image task types (source/generation/image_tasks.py): Qwen-Image and Z-Image
    *(TaskType(name, f"{_IMAGES}:handle_{handler}", default_model=model) for name, handler, model in (
        ("qwen_image", "text_to_image", "qwen_image"), ("qwen_image_2512", "text_to_image", "qwen_image_2512"),
        ("qwen_image_hires", "text_to_image", "qwen_image"), ("z_image_turbo", "text_to_image", "z_image"),
        ("qwen_image_style", "style", "qwen_image_edit"), ("qwen_image_edit", "edit", "qwen_image_edit"),
        ("image_inpaint", "masked_edit", "qwen_image_edit"),
        ("annotated_image_edit", "masked_edit", "qwen_image_edit"),
        ("z_image_turbo_i2i", "z_image_i2i", "z_image"))),
    TaskType("image-upscale", f"{_HANDLERS}.upscale_image:handle_image_upscale"),
    # Utilities
    TaskType("extract_frame", f"{_HANDLERS}.extract_frame:handle_extract_frame"),
    TaskType("rife_interpolate_images", f"{_HANDLERS}.rife_interpolate:handle_rife_interpolate_images"),
    TaskType("video_enhance", f"{_HANDLERS}.video_enhance:handle_video_enhance"),
    TaskType("generate_openpose", f"{_HANDLERS}.openpose:handle_generate_openpose"),
    TaskType("generate_depth", f"{_HANDLERS}.depth:handle_generate_depth"),
    # Diagnostics
    TaskType("ping", f"{_HANDLERS}.ping:handle_ping"),
)

def _check(records: tuple[TaskType, ...]) -> None:
    """A wrong record fails at import (every test imports this), not in a worker at claim time."""
    names = [t.name for t in records]
    if len(set(names)) != len(names):
        raise ValueError(f"task types named twice: {sorted({n for n in names if names.count(n) > 1})}")
    for t in records:
        if clash := set(t.aliases) & set(names):
            raise ValueError(f"{t.name}: alias {sorted(clash)} is itself a task type")
        if t.direct_generation and (t.default_model is None or t.generates_as is not None):
            raise ValueError(f"{t.name}: a direct generation names its default model, nothing else")
        if t.generates_as is not None and (t.generates_as not in names or t.default_model is not None):
            raise ValueError(f"{t.name}: generates_as must name another task type, with no default_model")
        if t.older_shape and t.older_shape.completes and t.older_shape.completes not in names:
            raise ValueError(f"{t.name}: older_shape.completes names no task type")
        if t.output is Output.SINGLE_IMAGE and not t.direct_generation:
            raise ValueError(f"{t.name}: only a direct generation has an output kind of its own")


_check(TASK_TYPES)
BY_NAME: Mapping[str, TaskType] = MappingProxyType({t.name: t for t in TASK_TYPES})
# The model names Reigh's rows carry in params.model → our definitions (a worker allowed a definition claims
# rows naming it either way; source/worker/capabilities.py).
MODEL_ALIASES: Mapping[str, str] = MappingProxyType({
    "qwen-image": "qwen_image", "qwen-image-2512": "qwen_image_2512", "z-image": "z_image",
})
ALIASES: Mapping[str, str] = MappingProxyType({alias: t.name for t in TASK_TYPES for alias in t.aliases})


# Direct generation: task_type → its default model (a defaults/<model>.json definition; `params.model` wins).
GENERATION_MODELS: Mapping[str, str] = MappingProxyType(
    {t.name: t.default_model for t in TASK_TYPES if t.direct_generation})  # type: ignore[misc]
# Other task types that generate in the claiming worker with a model of their own when the row names none.
OWN_DEFAULT_MODELS: Mapping[str, str] = MappingProxyType(
    {t.name: t.default_model for t in TASK_TYPES if t.default_model and not t.direct_generation})  # type: ignore[misc]


def canonical(task_type: str) -> str:
    return ALIASES.get(task_type, task_type)


def known() -> list[str]:
    """Every task type a row may name, aliases included."""
    return sorted([*BY_NAME, *ALIASES])


def generation_model(task_type: str) -> str | None:
    """The model a direct-generation task type runs by default (None for every other task type)."""
    return GENERATION_MODELS.get(canonical(task_type))


def claim_model(task_type: str) -> str | None:
    """The model a worker must be allowed to load to claim a row of this type naming no model (its own
    default model, or that of the generation it runs); None for a type that needs no model."""
    record = BY_NAME.get(canonical(task_type))
    if record is None:
        return None
    if record.generates_as is not None:
        return BY_NAME[record.generates_as].default_model
    return record.default_model


# The task types the SQL names (reclaim_expired_leases in both dialects; tests/foundation/test_task_types.py):
# orchestrators an older final child completes, and those children.
OLDER_FINAL_CHILDREN: Mapping[str, str] = MappingProxyType(
    {t.name: t.older_shape.completes for t in TASK_TYPES if t.older_shape and t.older_shape.completes})
