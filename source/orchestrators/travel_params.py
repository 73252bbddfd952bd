"""travel_orchestrator params (``orchestrator_details``, the keys existing producers send) validated into a
``TravelPlan``: one entry per segment, every count and overlap checked before any row is created."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from source.errors import InputUnavailable, InvalidParams
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


class TravelOrchestratorParams(TaskParams):
    orchestrator_details: TravelDetails


@dataclass(frozen=True)
class SegmentPlan:
    index: int
    start_image: str | None  # None: the first segment continues from a video
    end_image: str
    prompt: str
    negative_prompt: str
    frames: int
    overlap_from_previous: int
    overlap_with_next: int


@dataclass(frozen=True)
class TravelPlan:
    run_id: str
    width: int
    height: int
    segments: tuple[SegmentPlan, ...]
    details: TravelDetails
    ignored_params: tuple[str, ...] = ()
    adjusted: dict[str, Any] = field(default_factory=dict)  # values rounded as WanGP would (see checks.py)

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
    for i, prompt in enumerate(details.base_prompts_expanded):
        if not prompt.strip():
            raise InvalidParams(f"{WHERE}.base_prompts_expanded[{i}] is empty; every segment needs a prompt")
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
    check_model(f"{WHERE}.model_name", details.model_name, ("wan_vace",), "a travel segment (guide video + mask)")
    Fade.parse(f"{WHERE}.fade_in_params_json_str", details.fade_in_params_json_str)
    Fade.parse(f"{WHERE}.fade_out_params_json_str", details.fade_out_params_json_str)
    for i, image in enumerate(images):
        resolve_input(image, f"orchestrator_details.input_image_paths_resolved[{i}]", inputs, kind="image")
    if continuing:
        _check_continued_video(details.continue_from_video_resolved_path, overlaps_in[0], inputs)
    starts: list[str | None] = [None, *images[:-1]] if continuing else images[:-1]
    ends = images if continuing else images[1:]
    segments = tuple(
        SegmentPlan(i, starts[i], ends[i], details.base_prompts_expanded[i], negatives[i], frames[i],
                    overlaps_in[i], overlaps_out[i])
        for i in range(count)
    )
    return TravelPlan(details.run_id or task_id, width, height, segments, details, tuple(parsed.ignored_params()),
                      adjusted)


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
