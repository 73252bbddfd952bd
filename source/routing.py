"""The one routing table: task_type → handler. Adding a task type touches this file plus its test.

Handlers are named by import path and loaded on first use, so a worker that only runs utility or
diagnostic tasks never imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache

from source.errors import NotImplementedTaskType, UnknownTaskType
from source.task_context import TaskContext, TaskOutcome

Handler = Callable[[TaskContext], TaskOutcome]

GENERATION = "source.generation:handle_generation"
TRAVEL = "source.sm_functions.travel_between_images"
PERSPECTIVE = "source.sm_functions.different_perspective"

# None = part of the contract (DESIGN.md), handler not built yet.
ROUTES: dict[str, str | None] = {
    # direct generation (through HeadlessTaskQueue)
    "generate_video": GENERATION,
    "t2v": GENERATION,
    "t2v_22": GENERATION,
    "wan_2_2_t2i": GENERATION,
    "i2v": GENERATION,
    "i2v_22": GENERATION,
    "vace": GENERATION,
    "vace_21": GENERATION,
    "vace_22": GENERATION,
    "flux": GENERATION,
    "hunyuan": GENERATION,
    "ltxv": GENERATION,
    # orchestrators and their children
    "travel_orchestrator": f"{TRAVEL}:handle_travel_orchestrator",
    "travel_segment": f"{TRAVEL}:handle_travel_segment",
    "travel_stitch": f"{TRAVEL}:handle_travel_stitch",
    "different_perspective_orchestrator": f"{PERSPECTIVE}:handle_different_perspective_orchestrator",
    "dp_final_gen": f"{PERSPECTIVE}:handle_dp_final_gen",
    "magic_edit": "source.sm_functions.magic_edit:handle_magic_edit",
    # utilities
    "extract_frame": "source.specialized_handlers.extract_frame:handle_extract_frame",
    "rife_interpolate_images": "source.specialized_handlers.rife_interpolate:handle_rife_interpolate_images",
    "generate_openpose": "source.specialized_handlers.openpose:handle_generate_openpose",
    "generate_depth": "source.specialized_handlers.depth:handle_generate_depth",
    # diagnostics
    "ping": "source.specialized_handlers.ping:handle_ping",
}

# Task types that existing producers still insert.
LEGACY_ALIASES: dict[str, str] = {"wgp": "generate_video", "standard_wgp_task": "generate_video"}


def canonical_task_type(task_type: str) -> str:
    return LEGACY_ALIASES.get(task_type, task_type)


def known_task_types() -> list[str]:
    return sorted([*ROUTES, *LEGACY_ALIASES])


def resolve_handler(task_type: str) -> Handler:
    name = canonical_task_type(task_type)
    if name not in ROUTES:
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
