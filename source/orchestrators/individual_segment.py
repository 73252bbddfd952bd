"""``individual_travel_segment``: Reigh regenerating one segment of a travel (its create-task resolver
``individualTravelSegment``), run as one travel segment with no predecessor.

The row carries the segment at its top level, the travel's settings under ``orchestrator_details`` and the
user's edits under ``individual_segment_params`` (which win, as in reigh-worker). The output is the segment's
video; the result names the Reigh gallery items it belongs to (``parent_generation_id``,
``child_generation_id``, ``pair_shot_generation_id``, ``segment_index``, ``make_primary_variant``), which is
what Reigh's complete-task reads to add it as a variant of that segment of the parent generation.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from source.errors import InvalidParams
from source.generation.conversion import normalise_resolution
from source.generation.wangp_parameters import split_extras
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import TaskParams, parse_params
from source.orchestrators.checks import nearest_frame_count
from source.orchestrators.travel import SegmentParams, run_segment
from source.orchestrators.travel_params import REFUSED, REIGH_RECORD, TravelDetails, travel_model

# The Reigh gallery links a regenerated segment reports back.
GALLERY_LINKS = ("parent_generation_id", "child_generation_id", "pair_shot_generation_id", "shot_id",
                 "start_image_generation_id", "end_image_generation_id", "make_primary_variant", "contract_version")


class SegmentOverrides(TaskParams):
    start_image_url: str | None = None
    end_image_url: str | None = None
    input_image_paths_resolved: list[str] | None = None
    base_prompt: str | None = None
    enhanced_prompt: str | None = None
    negative_prompt: str | None = None
    num_frames: int | None = Field(None, ge=1)
    seed_to_use: int | None = None
    phase_config: dict[str, Any] | None = None
    additional_loras: dict[str, float | str] | None = None


class IndividualSegmentParams(TaskParams):
    segment_index: int = Field(0, ge=0)
    is_last_segment: bool = False
    base_prompt: str = ""
    enhanced_prompt: str | None = None
    negative_prompt: str = ""
    num_frames: int = Field(49, ge=1)
    seed_to_use: int = -1
    parsed_resolution_wh: str | list[int]
    model_name: str = "wan_2_2_i2v_lightning_baseline_2_2_2"
    input_image_paths_resolved: list[str] = Field(default_factory=list)
    additional_loras: dict[str, float | str] = Field(default_factory=dict)
    phase_config: dict[str, Any] | None = None
    num_inference_steps: int | None = Field(None, ge=1, le=200)
    guidance_scale: float | None = None
    flow_shift: float | None = None
    individual_segment_params: SegmentOverrides = Field(default_factory=SegmentOverrides)
    orchestrator_details: dict[str, Any] = Field(default_factory=dict)


def handle_individual_travel_segment(ctx: TaskContext) -> TaskOutcome:
    p = parse_params(IndividualSegmentParams, ctx.params)
    o = p.individual_segment_params
    details = _travel_details(p)
    images = o.input_image_paths_resolved or p.input_image_paths_resolved
    start = o.start_image_url or (images[0] if images else None)
    end = o.end_image_url or (images[1] if len(images) > 1 else None)
    if not start:
        raise InvalidParams("params.individual_segment_params.start_image_url is required")
    mode, model, swapped = travel_model(details)
    if end is None and mode == "vace":
        raise InvalidParams("params.individual_segment_params.end_image_url: a VACE segment needs an end image")
    adjusted: dict[str, Any] = {}
    frames = nearest_frame_count("params.num_frames", o.num_frames or p.num_frames, adjusted)
    prompt = (o.enhanced_prompt or p.enhanced_prompt or o.base_prompt or p.base_prompt
              or details.base_prompt or "").strip()
    if not prompt:
        raise InvalidParams("params.base_prompt is empty; a segment needs a prompt")
    reigh = {name: getattr(details, name) for name in REIGH_RECORD if getattr(details, name) is not None}
    extras = dict(p.model_extra or {})
    # reigh-worker's LoRA names for the generation (the URL list is checked against the phase config there)
    own_loras = {key: extras.pop(key) for key in ("lora_names", "lora_multipliers") if key in extras}
    forward, ignored = split_extras(extras, "params.")
    details_forward, details_ignored = split_extras(
        {k: v for k, v in p.orchestrator_details.items() if k not in TravelDetails.model_fields},
        "params.orchestrator_details.")
    forward = {**details_forward, **forward}
    ignored = [*ignored, *(f"orchestrator_details.{key}" for key in details_ignored)]
    segment = SegmentParams(
        orchestrator_task_id_ref=ctx.task.id, orchestrator_run_id=ctx.task.id, segment_index=p.segment_index,
        is_first_segment=True, is_last_segment=p.is_last_segment, segment_frames_target=frames,
        frame_overlap_from_previous=0, base_prompt=prompt, negative_prompt=o.negative_prompt or p.negative_prompt,
        seed=o.seed_to_use if o.seed_to_use is not None else p.seed_to_use, model=model, mode=mode,
        phase_config=o.phase_config or p.phase_config or details.phase_config, reigh=reigh,
        resolution=normalise_resolution(p.parsed_resolution_wh), start_image_path=start,
        end_image_path=end,
        additional_loras={**p.additional_loras, **(o.additional_loras or {})},
        num_inference_steps=p.num_inference_steps, guidance_scale=p.guidance_scale, flow_shift=p.flow_shift,
        generation={**forward, **{key: value for key, value in own_loras.items() if value}},
    )
    outcome = run_segment(ctx, segment)
    links = {name: ctx.params[name] for name in GALLERY_LINKS if ctx.params.get(name) is not None}
    extra = {**({"model_swapped": swapped} if swapped else {}), **({"adjusted_segment": adjusted} if adjusted else {}),
             **({"ignored_params": sorted({*outcome.result.get("ignored_params", []), *ignored})}
                if ignored or outcome.result.get("ignored_params") else {})}
    return TaskOutcome(output_path=outcome.output_path, result={**outcome.result, **extra, "reigh_links": links})


def _travel_details(p: IndividualSegmentParams) -> TravelDetails:
    """The travel settings the segment runs with (refused ones fail here, as for a whole travel)."""
    raw = {**p.orchestrator_details}
    raw.setdefault("model_name", p.model_name)
    for key, why in REFUSED.items():
        if raw.get(key):
            raise InvalidParams(f"params.orchestrator_details.{key}: {why}; leave it out")
    fields = set(TravelDetails.model_fields)
    known = {key: value for key, value in raw.items() if key in fields}
    known.update(input_image_paths_resolved=[], base_prompts_expanded=[], segment_frames_expanded=[],
                 frame_overlap_expanded=[], parsed_resolution_wh=p.parsed_resolution_wh)
    return parse_params(TravelDetails, known)
