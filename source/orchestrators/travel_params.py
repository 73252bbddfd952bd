"""travel_orchestrator params (``orchestrator_details``, the keys existing producers send) validated into a
``TravelPlan``: one entry per segment, every count and overlap checked before any row is created."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from source.engine.model_defs import list_model_types, load_model_def
from source.errors import InputUnavailable, InvalidParams
from source.generation.wangp_parameters import split_extras
from source.handlers.task_params import TaskParams, parse_params
from source.media.video import count_frames
from source.orchestrators.checks import check_model, check_resolution, nearest_frame_count
from source.orchestrators.travel_segment import Fade
from source.task_files.fetch import resolve_input
from source.task_files.policy import TaskInputs

WHERE = "params.orchestrator_details"
# A stitched video resized past this holds too many pixels in memory; upscale it as a separate task instead.
MAX_UPSCALE_FACTOR = 4.0


class TravelDetails(TaskParams):
    input_image_paths_resolved: list[str]
    base_prompts_expanded: list[str]
    negative_prompts_expanded: list[str] | None = None
    segment_frames_expanded: list[int]
    frame_overlap_expanded: list[int]
    parsed_resolution_wh: str | list[int]
    model_name: str
    seed_base: int = -1
    fps_helpers: int = Field(16, ge=1, le=120)
    fps_final_video: int | None = Field(None, ge=1, le=120)
    num_new_segments_to_generate: int | None = None
    run_id: str | None = None
    apply_causvid: bool = False
    use_lighti2x_lora: bool = False
    additional_loras: dict[str, float] = Field(default_factory=dict)
    num_inference_steps: int | None = Field(None, ge=1, le=200)
    steps: int | None = Field(None, ge=1, le=200)
    guidance_scale: float | None = None
    flow_shift: float | None = None
    crossfade_sharp_amt: float = Field(0.3, ge=0.0, le=10.0)
    # The final video resized by this factor (Lanczos) when above 1; 0 or 1: no resize (the older default 0.0).
    upscale_factor: float = Field(0.0, ge=0.0, le=MAX_UPSCALE_FACTOR)
    continue_from_video_resolved_path: str | None = None
    fade_in_params_json_str: str | None = None
    fade_out_params_json_str: str | None = None
    subsequent_starting_strength_adjustment: float = Field(0.0, ge=-1.0, le=1.0)
    desaturate_subsequent_starting_frames: float = Field(0.0, ge=0.0, le=1.0)
    adjust_brightness_subsequent_starting_frames: float = Field(0.0, ge=-1.0, le=1.0)
    # Reigh's travel (banodoco/reigh-app create-task travelBetweenImages / individualTravelSegment)
    model_type: Literal["i2v", "vace"] | None = None
    phase_config: dict[str, Any] | None = None
    phase_configs_expanded: list[dict[str, Any] | None] | None = None
    independent_segments: bool = True
    chain_segments: bool | None = None
    base_prompt: str | None = None
    enhanced_prompts_expanded: list[str] | None = None
    enhance_prompt: bool = False
    text_before_prompts: str | None = None
    text_after_prompts: str | None = None
    after_first_post_generation_saturation: float = 1.0
    after_first_post_generation_brightness: float = 0.0
    # Refused when set (travel_params.REFUSED says why)
    use_svi: bool = False
    continuation_config: dict[str, Any] | None = None
    travel_guidance: dict[str, Any] | None = None
    structure_guidance: dict[str, Any] | None = None
    structure_videos: list[Any] | None = None
    loras_per_segment_expanded: list[Any] | None = None
    motion_settings_expanded: list[Any] | None = None
    # Reigh's own record of how the UI built the row (the motion preset that produced phase_config, ids of its
    # gallery items): carried to each segment and shown in results, as reigh-worker does; no effect on pixels.
    amount_of_motion: float | None = Field(None, ge=0.0, le=1.0)
    motion_mode: Literal["basic", "presets", "advanced"] | None = None
    advanced_mode: bool | None = None
    selected_phase_preset_id: str | None = None
    generation_mode: str | None = None
    generation_source: str | None = None
    dimension_source: str | None = None
    show_input_images: bool | None = None
    debug_mode_enabled: bool | None = None
    orchestrator_task_id: str | None = None
    shot_id: str | None = None
    parent_generation_id: str | None = None
    input_image_generation_ids: list[str] | None = None
    pair_shot_generation_ids: list[str] | None = None
    generation_name: str | None = None


# Reigh travel settings this worker does not run: a row that sets one fails naming it and why.
REFUSED: dict[str, str] = {
    "use_svi": "SVI latent chaining (Stable Video Infinity LoRAs) is not implemented here",
    "continuation_config": "continuation strategies (SVI / prefix video) are not implemented here",
    "travel_guidance": "structure guidance videos (travel_guidance) are not implemented here",
    "structure_guidance": "structure guidance videos are not implemented here",
    "structure_videos": "structure guidance videos are not implemented here",
    "loras_per_segment_expanded": "per-pair LoRAs are not implemented here (put them in phase_configs_expanded)",
    "motion_settings_expanded": "per-pair motion settings are not implemented here",
}
REIGH_RECORD = ("amount_of_motion", "motion_mode", "advanced_mode", "selected_phase_preset_id", "generation_mode",
                "generation_source", "dimension_source", "show_input_images", "debug_mode_enabled",
                "orchestrator_task_id", "shot_id", "parent_generation_id", "input_image_generation_ids",
                "pair_shot_generation_ids", "generation_name")


class TravelOrchestratorParams(TaskParams):
    orchestrator_details: TravelDetails


@dataclass(frozen=True)
class SegmentPlan:
    index: int
    phase_config: dict[str, Any] | None
    start_image: str | None  # None: the first segment continues from a video
    end_image: str
    prompt: str
    negative_prompt: str
    frames: int
    overlap_from_previous: int
    overlap_with_next: int


@dataclass(frozen=True)
class TravelPlan:
    mode: Literal["i2v", "vace"]
    model: str
    chained: bool  # i2v: each segment starts from the previous one's last frame
    run_id: str
    width: int
    height: int
    segments: tuple[SegmentPlan, ...]
    details: TravelDetails
    ignored_params: tuple[str, ...] = ()
    adjusted: dict[str, Any] = field(default_factory=dict)  # values rounded as WanGP would (see checks.py)
    model_swapped: dict[str, Any] | None = None
    # WanGP engine parameters the row gives beside the travel's own: every segment's generation takes them
    generation: dict[str, Any] = field(default_factory=dict)

    @property
    def phased_model(self) -> bool:
        """The model's definition plans guidance phases (a Lightning definition: its steps are its own)."""
        return load_model_def(self.model).settings.get("guidance_phases") is not None

    @property
    def reigh(self) -> dict[str, Any]:
        """Reigh's record of the UI settings, as the row gave them."""
        return {name: getattr(self.details, name) for name in REIGH_RECORD if getattr(self.details, name) is not None}

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def final_frames(self) -> int:
        return sum(s.frames for s in self.segments) - sum(s.overlap_from_previous for s in self.segments[1:])


def plan_travel(params: dict[str, Any], *, task_id: str, inputs: TaskInputs,
                check_children: Callable[[int], None] = lambda count: None) -> TravelPlan:
    """``check_children`` sees the number of child rows (segments + stitch) before any input is resolved."""
    if not isinstance(params.get("orchestrator_details"), dict):
        raise InvalidParams(f"{WHERE} is required and must be an object")
    parsed = parse_params(TravelOrchestratorParams, params)
    details = parsed.orchestrator_details
    images = details.input_image_paths_resolved
    continuing = bool(details.continue_from_video_resolved_path)
    count = len(images) if continuing else len(images) - 1
    if count < 1:
        need = "at least 1 image when continuing from a video" if continuing else "at least 2 images"
        raise InvalidParams(f"{WHERE}.input_image_paths_resolved has {len(images)} entries; a travel needs {need}")
    check_children(count + 1)
    if details.num_new_segments_to_generate is not None and details.num_new_segments_to_generate != count:
        raise InvalidParams(f"{WHERE}.num_new_segments_to_generate is {details.num_new_segments_to_generate} but "
                            f"{len(images)} images make {count} segments")
    _check_length("base_prompts_expanded", details.base_prompts_expanded, count)
    negatives = details.negative_prompts_expanded or [""] * count
    _check_length("negative_prompts_expanded", negatives, count)
    _check_length("segment_frames_expanded", details.segment_frames_expanded, count)
    _check_refused(details)
    prompts = _segment_prompts(details, count)
    phase_configs = details.phase_configs_expanded or [None] * count
    _check_length("phase_configs_expanded", phase_configs, count)
    adjusted: dict[str, Any] = {}
    frames = [nearest_frame_count(f"{WHERE}.segment_frames_expanded[{i}]", value, adjusted)
              for i, value in enumerate(details.segment_frames_expanded)]
    overlaps_in = _overlaps_into_segments(details.frame_overlap_expanded, count, continuing)
    for i, overlap in enumerate(overlaps_in):
        if overlap < 0:
            raise InvalidParams(f"{WHERE}.frame_overlap_expanded has a negative overlap ({overlap})")
        if overlap >= frames[i] or (i > 0 and overlap >= frames[i - 1]):
            shorter = min(frames[i], frames[i - 1]) if i > 0 else frames[i]
            raise InvalidParams(f"{WHERE}.frame_overlap_expanded: the overlap into segment {i} ({overlap} frames) "
                                f"must be smaller than the segments it joins ({shorter} frames)")
    overlaps_out = [*overlaps_in[1:], 0]
    for i in range(count):
        if overlaps_in[i] + overlaps_out[i] > frames[i]:
            raise InvalidParams(f"{WHERE}: segment {i} has {frames[i]} frames but overlaps {overlaps_in[i]} with "
                                f"the previous and {overlaps_out[i]} with the next segment")
    width, height = check_resolution(f"{WHERE}.parsed_resolution_wh", details.parsed_resolution_wh, adjusted=adjusted)
    mode, model, swapped = travel_model(details)
    if mode == "i2v" and continuing:
        raise InvalidParams(f"{WHERE}.continue_from_video_resolved_path: continuing a video needs a VACE model "
                            f"(model_type \"vace\"); {model!r} is image-to-video")
    Fade.parse(f"{WHERE}.fade_in_params_json_str", details.fade_in_params_json_str)
    Fade.parse(f"{WHERE}.fade_out_params_json_str", details.fade_out_params_json_str)
    for i, image in enumerate(images):
        resolve_input(image, f"orchestrator_details.input_image_paths_resolved[{i}]", inputs, kind="image")
    if continuing:
        _check_continued_video(details.continue_from_video_resolved_path, overlaps_in[0], inputs)
    starts: list[str | None] = [None, *images[:-1]] if continuing else images[:-1]
    ends = images if continuing else images[1:]
    segments = tuple(
        SegmentPlan(i, phase_configs[i] or details.phase_config, starts[i], ends[i], prompts[i], negatives[i],
                    frames[i], overlaps_in[i], overlaps_out[i])
        for i in range(count)
    )
    if mode == "vace" and details.chain_segments is False:
        raise InvalidParams(f"{WHERE}.chain_segments false: VACE travel segments here always continue from the "
                            f"previous segment's tail")
    chained = mode == "i2v" and not details.independent_segments
    forward, ignored = split_extras(details.model_extra or {}, f"{WHERE}.")
    top_forward, top_ignored = split_extras(parsed.model_extra or {}, "params.")
    return TravelPlan(mode, model, chained, details.run_id or task_id, width, height, segments, details,
                      (*(f"orchestrator_details.{key}" for key in ignored), *top_ignored), adjusted, swapped,
                      {**top_forward, **forward})


def travel_model(details: TravelDetails) -> tuple[Literal["i2v", "vace"], str, dict[str, Any] | None]:
    """How the segments generate: Reigh's default is image-to-video (each segment from its start image to its
    end image); ``model_type: "vace"`` (or a VACE model) builds guide videos. A VACE-mode row naming an i2v
    model runs its VACE sibling (the same name with ``vace`` for ``i2v``), recorded in the result."""
    name = f"{WHERE}.model_name"
    model = check_model(name, details.model_name, ("wan_i2v", "wan_vace"), "a travel")
    architecture = load_model_def(model).architecture
    if architecture == "wan_vace":
        if details.model_type == "i2v":
            raise InvalidParams(f"{name} {model!r} is a VACE model but model_type is \"i2v\"")
        return "vace", model, None
    if details.model_type != "vace":
        return "i2v", model, None
    sibling = model.replace("i2v", "vace", 1)
    if sibling == model or sibling not in list_model_types() or load_model_def(sibling).architecture != "wan_vace":
        raise InvalidParams(f"{name} {model!r} is image-to-video and model_type is \"vace\", and there is no VACE "
                            f"sibling definition {sibling!r}; name a VACE model")
    return "vace", sibling, {"requested": model, "used": sibling, "reason": "model_type vace: the VACE sibling"}


def _check_refused(details: TravelDetails) -> None:
    for key, why in REFUSED.items():
        value = getattr(details, key)
        if value and (not isinstance(value, list) or any(entry for entry in value)):
            raise InvalidParams(f"{WHERE}.{key}: {why}; leave it out")
    if details.after_first_post_generation_saturation != 1.0 or details.after_first_post_generation_brightness != 0.0:
        raise InvalidParams(f"{WHERE}.after_first_post_generation_saturation/_brightness: only the neutral 1 / 0 "
                            f"are supported (use desaturate_subsequent_starting_frames / "
                            f"adjust_brightness_subsequent_starting_frames)")


def _segment_prompts(details: TravelDetails, count: int) -> list[str]:
    """Each segment's prompt: its enhanced prompt when given, else its own, else ``base_prompt`` (Reigh leaves
    a pair's prompt empty to mean the shot's), between ``text_before_prompts`` and ``text_after_prompts``."""
    enhanced = details.enhanced_prompts_expanded or [""] * count
    _check_length("enhanced_prompts_expanded", enhanced, count)
    prompts = []
    for i in range(count):
        if details.enhance_prompt and not enhanced[i].strip():
            raise InvalidParams(f"{WHERE}.enhance_prompt: prompt enhancement needs a vision-language model, which "
                                f"this worker does not run; send enhanced_prompts_expanded or enhance_prompt false")
        prompt = (enhanced[i].strip() or details.base_prompts_expanded[i].strip() or (details.base_prompt or "").strip())
        if not prompt:
            raise InvalidParams(f"{WHERE}.base_prompts_expanded[{i}] is empty and there is no base_prompt; every "
                                f"segment needs a prompt")
        prompts.append(" ".join(part.strip() for part in (details.text_before_prompts, prompt,
                                                          details.text_after_prompts) if part and part.strip()))
    return prompts


def _check_length(name: str, values: list, count: int) -> None:
    if len(values) != count:
        raise InvalidParams(f"{WHERE}.{name} has {len(values)} entries; {count} segment(s) need {count}")


def _overlaps_into_segments(values: list[int], count: int, continuing: bool) -> list[int]:
    """Overlap of each segment with what comes before it. ``frame_overlap_expanded[i]`` is the join after
    segment i (a trailing entry for the last segment is ignored); when continuing a video, entry 0 is the
    join with that video and entry i the join before segment i."""
    if continuing:
        _check_length("frame_overlap_expanded", values, count)
        return list(values)
    if len(values) not in (count - 1, count):
        raise InvalidParams(f"{WHERE}.frame_overlap_expanded has {len(values)} entries; {count} segment(s) need "
                            f"{count - 1} (one per join; a trailing entry for the last segment is allowed)")
    return [0, *values[: count - 1]]


def _check_continued_video(value: str | None, overlap: int, inputs: TaskInputs) -> None:
    path = resolve_input(value, "orchestrator_details.continue_from_video_resolved_path", inputs, kind="video")
    frames = count_frames(path)
    if frames <= 0:
        raise InputUnavailable(f"{WHERE}.continue_from_video_resolved_path: cannot read any frame from {path}")
    if overlap > frames:
        raise InvalidParams(f"{WHERE}.frame_overlap_expanded[0] is {overlap} but the continued video has only "
                            f"{frames} frames")
