"""The one routing table: task_type → handler. Adding a task type touches this file plus its test.

Handlers are named by import path and loaded on first use, so a worker that only runs utility or
diagnostic tasks never imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from functools import cache
from types import MappingProxyType

from source.errors import NotImplementedTaskType, UnknownTaskType
from source.handlers.context import TaskContext, TaskOutcome

Handler = Callable[[TaskContext], TaskOutcome]

GENERATION = "source.generation.handler:handle_generation"
TRAVEL = "source.orchestrators.travel"
PERSPECTIVE = "source.orchestrators.different_perspective"
JOIN = "source.orchestrators.join_clips"

# Direct generation (through HeadlessTaskQueue): task_type → its default model (a defaults/<model>.json
# definition; `params.model` wins). The routes below and generation.conversion's map both derive from this.
GENERATION_MODELS: Mapping[str, str] = MappingProxyType({
    "generate_video": "t2v",
    "t2v": "t2v",
    "t2v_22": "t2v_2_2",
    "wan_2_2_t2i": "t2v_2_2",
    "i2v": "i2v",
    "i2v_22": "i2v_2_2",
    "vace": "vace_14B_cocktail_2_2",
    "vace_21": "vace_14B",
    "vace_22": "vace_14B_cocktail_2_2",
    "flux": "flux",
    "hunyuan": "hunyuan",
    "ltxv": "ltxv_13B",
    "ltx2": "ltx2_19B",
    "single_image": "t2v",  # the older worker's one-image generation (video_length 1)
})

# None = part of the contract (DESIGN.md), handler not built yet.
ROUTES: dict[str, str | None] = {
    **dict.fromkeys(GENERATION_MODELS, GENERATION),
    # orchestrators and their children
    "travel_orchestrator": f"{TRAVEL}:handle_travel_orchestrator",
    "travel_segment": f"{TRAVEL}:handle_travel_segment",
    "travel_stitch": f"{TRAVEL}:handle_travel_stitch",
    "different_perspective_orchestrator": f"{PERSPECTIVE}:handle_different_perspective_orchestrator",
    "dp_final_gen": f"{PERSPECTIVE}:handle_dp_final_gen",
    "magic_edit": "source.orchestrators.magic_edit:handle_magic_edit",
    "join_clips_orchestrator": f"{JOIN}:handle_join_clips_orchestrator",
    "join_clips_segment": f"{JOIN}:handle_join_clips_segment",
    "join_final_stitch": f"{JOIN}:handle_join_final_stitch",
    "edit_video_orchestrator": "source.orchestrators.edit_video:handle_edit_video_orchestrator",
    # VACE edits of existing videos
    "join_clips": "source.handlers.vace_edit:handle_join_clips",
    "inpaint_frames": "source.handlers.vace_edit:handle_inpaint_frames",
    # utilities
    "extract_frame": "source.handlers.extract_frame:handle_extract_frame",
    "rife_interpolate_images": "source.handlers.rife_interpolate:handle_rife_interpolate_images",
    "generate_openpose": "source.handlers.openpose:handle_generate_openpose",
    "generate_depth": "source.handlers.depth:handle_generate_depth",
    # diagnostics
    "ping": "source.handlers.ping:handle_ping",
}

# Edits that run one generation of another task type (source/handlers/vace_edit.py): a row naming no model
# needs that type's default model (what the worker's --models must allow for it).
GENERATES_AS: Mapping[str, str] = MappingProxyType({"join_clips": "vace", "inpaint_frames": "vace",
                                                    "join_clips_segment": "vace"})
# Other task types that generate in the claiming worker with a model of their own when the row names none.
OWN_DEFAULT_MODELS: Mapping[str, str] = MappingProxyType({"magic_edit": "flux_kontext"})

# Task types that existing producers still insert.
LEGACY_ALIASES: dict[str, str] = {"wgp": "generate_video", "standard_wgp_task": "generate_video"}


def canonical_task_type(task_type: str) -> str:
    return LEGACY_ALIASES.get(task_type, task_type)


def model_for_task_type(task_type: str) -> str | None:
    """The model a direct-generation task type runs by default (None for every other task type)."""
    return GENERATION_MODELS.get(canonical_task_type(task_type))


def default_model(task_type: str) -> str | None:
    """The model a row of this type runs when it names none: its own (model_for_task_type, OWN_DEFAULT_MODELS)
    or that of the generation it runs (GENERATES_AS); None for a type that needs no model."""
    name = canonical_task_type(task_type)
    return OWN_DEFAULT_MODELS.get(name) or model_for_task_type(GENERATES_AS.get(name, name))


def known_task_types() -> list[str]:
    return sorted([*ROUTES, *LEGACY_ALIASES])


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
