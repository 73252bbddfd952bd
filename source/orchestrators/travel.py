"""travel_orchestrator (and Reigh's turbo ``wan_2_2_i2v``) → travel_segment × N-1 → travel_stitch.

The orchestrator validates everything and inserts the chain. Each segment generates either as image-to-video
(Reigh's default: from its start image to its end image, or from the previous segment's last frame when the
row chains segments) or through VACE with a guide built from the previous segment's tail; the stitch
cross-fades the segments into the final video, which also completes the orchestrator row.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from source.db.models import TaskStatus, may_link
from source.engine.postprocess import upsample_space
from source.errors import TaskError
from source.generation.conversion import normalise_resolution
from source.generation.handler import generate
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import TaskParams, parse_params, takes
from source.media.video import colour_match, crossfade_join, read_image, read_video, save_video
from source.orchestrators.children import (
    ChildSpec,
    check_child_count,
    child_payload,
    dependency_output,
    spawn_chain,
)
from source.orchestrators.crossfade_join import handle_crossfade_join, is_crossfade_join
from source.orchestrators.older_shapes import older_orchestrator_to_complete, translate_older_child
from source.orchestrators.travel_params import (
    MAX_UPSCALE_FACTOR,
    SegmentPlan,
    TravelOrchestratorParams,
    TravelPlan,
    plan_travel,
)
from source.orchestrators.travel_segment import Fade, OverlapAdjustments, build_segment_guide
from source.task_files.fetch import resolve_input
from source.task_files.paths import safe_filename

STITCH_KEY = "stitch"
GUIDE_FPS = 16  # the guide and mask are read frame by frame; their rate is only metadata


# -- orchestrator ----------------------------------------------------------------------------------------
@takes(TravelOrchestratorParams)
def handle_travel_orchestrator(ctx: TaskContext) -> TaskOutcome:
    plan = plan_travel(ctx.params, task_id=ctx.task.id, inputs=ctx.inputs,
                       check_children=lambda count: check_child_count(ctx, count))
    specs = [ChildSpec(f"segment_{s.index:03d}", "travel_segment", _segment_payload(ctx, plan, s))
             for s in plan.segments]
    specs.append(ChildSpec(STITCH_KEY, "travel_stitch", _stitch_payload(ctx, plan)))
    ctx.log.info("travel_planned", run_id=plan.run_id, segments=len(plan.segments), final_frames=plan.final_frames)
    result: dict[str, Any] = {"run_id": plan.run_id, "segments": len(plan.segments),
                              "expected_frames": plan.final_frames, "mode": plan.mode, "model": plan.model,
                              "chained_from_last_frame": plan.chained}
    if plan.model_swapped:
        result["model_swapped"] = plan.model_swapped
    if plan.phased_model and plan.details.steps and not plan.details.num_inference_steps:
        # reigh-worker: a travel's `steps` is the UI's count, diffusion steps come from num_inference_steps
        result["steps_not_applied"] = {"steps": plan.details.steps, "reason": f"{plan.model} plans its own "
                                       "guidance phases; give num_inference_steps or a phase_config to change them"}
    if plan.reigh:
        result["reigh"] = plan.reigh
    if plan.ignored_params:
        result["ignored_params"] = list(plan.ignored_params)
    if plan.adjusted:
        result["adjusted"] = plan.adjusted
    return spawn_chain(ctx, specs, result=result)


def _segment_payload(ctx: TaskContext, plan: TravelPlan, segment: SegmentPlan) -> dict[str, Any]:
    d = plan.details
    return child_payload(SegmentParams(
        orchestrator_task_id_ref=ctx.task.id,
        orchestrator_run_id=plan.run_id,
        segment_index=segment.index,
        is_first_segment=segment.index == 0,
        is_last_segment=segment.index == len(plan.segments) - 1,
        segment_frames_target=segment.frames,
        frame_overlap_from_previous=segment.overlap_from_previous,
        frame_overlap_with_next=segment.overlap_with_next,
        base_prompt=segment.prompt,
        negative_prompt=segment.negative_prompt,
        seed=d.seed_base,
        model=plan.model,
        mode=plan.mode,
        chain_from_previous=plan.chained and segment.index > 0,
        phase_config=segment.phase_config,
        generation=plan.generation,
        reigh=plan.reigh,
        resolution=plan.resolution,
        start_image_path=segment.start_image,
        end_image_path=segment.end_image,
        continue_from_video_resolved_path=d.continue_from_video_resolved_path if segment.index == 0 else None,
        num_inference_steps=d.num_inference_steps or (None if plan.phased_model else d.steps),
        guidance_scale=d.guidance_scale,
        flow_shift=d.flow_shift,
        additional_loras=d.additional_loras,
        use_causvid_lora=d.apply_causvid,
        use_lighti2x_lora=d.use_lighti2x_lora,
        fade_in_params_json_str=d.fade_in_params_json_str,
        fade_out_params_json_str=d.fade_out_params_json_str,
        subsequent_starting_strength_adjustment=d.subsequent_starting_strength_adjustment,
        desaturate_subsequent_starting_frames=d.desaturate_subsequent_starting_frames,
        adjust_brightness_subsequent_starting_frames=d.adjust_brightness_subsequent_starting_frames,
    ))


def _stitch_payload(ctx: TaskContext, plan: TravelPlan) -> dict[str, Any]:
    d = plan.details
    return child_payload(StitchParams(
        orchestrator_task_id_ref=ctx.task.id,
        orchestrator_run_id=plan.run_id,
        num_segments=len(plan.segments),
        frame_overlaps=[s.overlap_from_previous for s in plan.segments],
        crossfade_sharp_amt=d.crossfade_sharp_amt,
        fps_final_video=d.fps_final_video or d.fps_helpers,
        resolution=plan.resolution,
        continue_from_video_resolved_path=d.continue_from_video_resolved_path,
        expected_frames=plan.final_frames,
        upscale_factor=d.upscale_factor,
    ))


# -- segment ---------------------------------------------------------------------------------------------
class SegmentParams(TaskParams):
    orchestrator_task_id_ref: str
    orchestrator_run_id: str
    segment_index: int = Field(ge=0)
    is_first_segment: bool
    is_last_segment: bool
    segment_frames_target: int = Field(ge=1)
    frame_overlap_from_previous: int = Field(ge=0)
    frame_overlap_with_next: int = Field(0, ge=0)
    base_prompt: str
    negative_prompt: str = ""
    seed: int = -1
    model: str
    mode: Literal["vace", "i2v"] = "vace"
    # i2v: start from the previous segment's last frame instead of start_image_path
    chain_from_previous: bool = False
    phase_config: dict[str, Any] | None = None
    # WanGP engine parameters the travel row gave beside its own settings (passed to the generation as is)
    generation: dict[str, Any] = Field(default_factory=dict)
    # Reigh's record of the UI settings behind the row (travel_params.REIGH_RECORD), shown in the result
    reigh: dict[str, Any] = Field(default_factory=dict)
    resolution: str
    start_image_path: str | None = None
    end_image_path: str | None = None  # only an i2v segment may have none (it ends where the generation goes)
    continue_from_video_resolved_path: str | None = None
    num_inference_steps: int | None = Field(None, ge=1, le=200)
    guidance_scale: float | None = None
    flow_shift: float | None = None
    additional_loras: dict[str, float | str] = Field(default_factory=dict)
    use_causvid_lora: bool = False
    use_lighti2x_lora: bool = False
    apply_reward_lora: bool = False
    fade_in_params_json_str: str | None = None
    fade_out_params_json_str: str | None = None
    subsequent_starting_strength_adjustment: float = 0.0
    desaturate_subsequent_starting_frames: float = 0.0
    adjust_brightness_subsequent_starting_frames: float = 0.0


@takes(SegmentParams, translated=True)
def handle_travel_segment(ctx: TaskContext) -> TaskOutcome:
    older = translate_older_child("travel_segment", ctx.params)
    return run_segment(ctx, parse_params(SegmentParams, older.params if older else ctx.params), older)


def run_segment(ctx: TaskContext, p: SegmentParams, older=None) -> TaskOutcome:
    if p.mode == "i2v":
        return _image_to_video_segment(ctx, p)
    width, height = (int(v) for v in normalise_resolution(p.resolution).split("x"))
    size = (width, height)
    work = ctx.work_dir
    start = read_image(resolve_input(p.start_image_path, "start_image_path", ctx.inputs, kind="image"), "start_image_path", size) \
        if p.start_image_path else None
    if not p.end_image_path:
        raise TaskError("a VACE travel segment needs end_image_path")
    end = read_image(resolve_input(p.end_image_path, "end_image_path", ctx.inputs, kind="image"), "end_image_path", size)
    tail = None
    if p.frame_overlap_from_previous:
        source = (p.continue_from_video_resolved_path if p.is_first_segment
                  else dependency_output(ctx, ctx.task.dependant_on, "previous segment"))
        if not source:
            raise TaskError("segment has an overlap from previous but no previous video to take it from")
        previous = read_video(resolve_input(source, "previous segment video", ctx.inputs, kind="video"), "previous segment video", size)
        if len(previous) < p.frame_overlap_from_previous:
            raise TaskError(f"the previous video has {len(previous)} frames, fewer than the overlap "
                            f"{p.frame_overlap_from_previous}")
        tail = previous[-p.frame_overlap_from_previous:]
    ctx.check_cancelled()
    subsequent = not p.is_first_segment
    guide = build_segment_guide(
        frames=p.segment_frames_target, size=size, start_image=start, end_image=end, previous_tail=tail,
        fade_out=Fade.parse("fade_out_params_json_str", p.fade_out_params_json_str),
        fade_in=Fade.parse("fade_in_params_json_str", p.fade_in_params_json_str),
        adjustments=OverlapAdjustments(
            p.subsequent_starting_strength_adjustment if subsequent else 0.0,
            p.desaturate_subsequent_starting_frames if subsequent else 0.0,
            p.adjust_brightness_subsequent_starting_frames if subsequent else 0.0,
        ),
    )
    guide_path = save_video(guide.guide, work / "guide.mp4", GUIDE_FPS)
    request: dict[str, Any] = {
        "prompt": p.base_prompt, "negative_prompt": p.negative_prompt, "model": p.model,
        "resolution": f"{width}x{height}", "video_length": p.segment_frames_target, "seed": p.seed,
        "video_guide": str(guide_path), "additional_loras": p.additional_loras,
        "use_causvid_lora": p.use_causvid_lora, "use_lighti2x_lora": p.use_lighti2x_lora,
        "apply_reward_lora": p.apply_reward_lora,
    }
    if ctx.settings.mask_active_frames:
        request["video_mask"] = str(save_video(guide.mask(), work / "mask.mp4", GUIDE_FPS))
    output = generate(ctx, "vace", {**_shared_settings(p), **request})
    result: dict[str, Any] = {**ctx.scratch_record("guide_video", guide_path),
                              "kept_frames": [int(i) for i in np.flatnonzero(guide.kept)],
                              **(older.result_extras() if older else {})}
    return _segment_outcome(ctx, p, output, start, result)


def _shared_settings(p: SegmentParams) -> dict[str, Any]:
    """What every segment's generation takes from the travel whatever its mode."""
    request: dict[str, Any] = {**p.generation, **{name: getattr(p, name) for name in (
        "num_inference_steps", "guidance_scale", "flow_shift", "phase_config") if getattr(p, name) is not None}}
    if p.phase_config is not None:
        request.pop("num_inference_steps", None)  # Reigh's steps_per_phase give the steps (as in reigh-worker)
    return request


def _image_to_video_segment(ctx: TaskContext, p: SegmentParams) -> TaskOutcome:
    """One i2v generation from the segment's start image (or the previous segment's last frame) to its end."""
    width, height = (int(v) for v in normalise_resolution(p.resolution).split("x"))
    size = (width, height)
    if p.chain_from_previous:
        previous = dependency_output(ctx, ctx.task.dependant_on, "previous segment")
        frames = read_video(resolve_input(previous, "previous segment video", ctx.inputs, kind="video"),
                            "previous segment video", size)
        start = frames[-1]
        start_path = ctx.work_dir / "start_from_previous.png"
        Image.fromarray(start).save(start_path)
    elif p.start_image_path:
        start_path = resolve_input(p.start_image_path, "start_image_path", ctx.inputs, kind="image")
        start = read_image(start_path, "start_image_path", size)
    else:
        raise TaskError("an image-to-video segment needs a start image")
    end_path = resolve_input(p.end_image_path, "end_image_path", ctx.inputs, kind="image") if p.end_image_path else None
    ctx.check_cancelled()
    request: dict[str, Any] = {
        **_shared_settings(p),
        "prompt": p.base_prompt, "negative_prompt": p.negative_prompt, "model": p.model,
        "resolution": f"{width}x{height}", "video_length": p.segment_frames_target, "seed": p.seed,
        "image_start": str(start_path), "image_end": str(end_path) if end_path else None,
        "additional_loras": p.additional_loras,
        "use_causvid_lora": p.use_causvid_lora, "use_lighti2x_lora": p.use_lighti2x_lora,
        "apply_reward_lora": p.apply_reward_lora,
    }
    output = generate(ctx, "i2v", request)
    return _segment_outcome(ctx, p, output, start, {"started_from": "previous segment's last frame"
                                                    if p.chain_from_previous else "start image"})


def _segment_outcome(ctx: TaskContext, p: SegmentParams, output, start, extra: dict[str, Any]) -> TaskOutcome:
    video = output.paths[0]
    result: dict[str, Any] = {**output.summary(), "segment_index": p.segment_index, "mode": p.mode,
                              "orchestrator_run_id": p.orchestrator_run_id, **extra,
                              **({"reigh": p.reigh} if p.reigh else {})}
    if ctx.settings.colour_match_videos and start is not None:
        frames = colour_match(read_video(video, "segment output"), start)
        video = save_video(frames, ctx.output_path(f"segment_{p.segment_index:03d}_colour_matched.mp4",
                                                   subdir=_run_dir(p.orchestrator_run_id)), output.fps or GUIDE_FPS)
        result["colour_matched"] = True
    return TaskOutcome(output_path=video, result=result)


# -- stitch ----------------------------------------------------------------------------------------------
class StitchParams(TaskParams):
    orchestrator_task_id_ref: str
    orchestrator_run_id: str
    num_segments: int = Field(ge=1)
    frame_overlaps: list[int]
    crossfade_sharp_amt: float = Field(0.3, ge=0.0, le=10.0)
    fps_final_video: int = Field(16, ge=1, le=120)
    resolution: str
    continue_from_video_resolved_path: str | None = None
    expected_frames: int | None = None
    upscale_factor: float = Field(0.0, ge=0.0, le=MAX_UPSCALE_FACTOR)


@takes(StitchParams, translated=True)
def handle_travel_stitch(ctx: TaskContext) -> TaskOutcome:
    if is_crossfade_join(ctx.params):
        return handle_crossfade_join(ctx)
    older = translate_older_child("travel_stitch", ctx.params)
    p = parse_params(StitchParams, older.params if older else ctx.params)
    if len(p.frame_overlaps) != p.num_segments:
        raise TaskError(f"frame_overlaps has {len(p.frame_overlaps)} entries for {p.num_segments} segments")
    width, height = (int(v) for v in normalise_resolution(p.resolution).split("x"))
    segments = _segments_of_run(ctx, p)
    clips = [read_video(resolve_input(ctx.output_of(row.output_location), f"segment {i}", ctx.inputs, kind="video"), f"segment {i}",
                        (width, height)) for i, row in enumerate(segments)]
    overlaps = list(p.frame_overlaps)
    if p.continue_from_video_resolved_path:
        continued = resolve_input(p.continue_from_video_resolved_path, "continue_from_video_resolved_path",
                                  ctx.inputs, kind="video")
        clips.insert(0, read_video(continued, "continued video", (width, height)))
        overlaps.insert(0, 0)
    else:
        overlaps[0] = 0
    ctx.check_cancelled()
    final = crossfade_join(clips, overlaps, p.crossfade_sharp_amt)
    if p.expected_frames is not None and not p.continue_from_video_resolved_path and len(final) != p.expected_frames:
        raise TaskError(f"stitched {len(final)} frames, expected {p.expected_frames}: a segment has the wrong length")
    result: dict[str, Any] = {}
    if p.upscale_factor > 1.0:
        ctx.check_cancelled()
        final = _upscale(final, p.upscale_factor)
        result["upscale"] = {"factor": p.upscale_factor, "method": "lanczos",
                             "resolution": f"{final.shape[2]}x{final.shape[1]}"}
    path = save_video(final, ctx.output_path("travel_final.mp4", subdir=_run_dir(p.orchestrator_run_id)),
                      p.fps_final_video)
    ctx.log.info("travel_stitched", frames=len(final), segments=len(segments), path=str(path), **result)
    older_parent, older_note = older_orchestrator_to_complete(ctx.store, ctx.task, older)
    return TaskOutcome(output_path=path, completes_parent=True, parent_task_id=older_parent, result={
        "frames": len(final), "fps": p.fps_final_video, "orchestrator_run_id": p.orchestrator_run_id,
        "segment_task_ids": [row.id for row in segments], "segment_frames": [len(c) for c in clips],
        "frame_overlaps": overlaps, **result, **(older.result_extras() if older else {}), **older_note,
    })


def _upscale(frames: np.ndarray, factor: float) -> np.ndarray:
    """The stitched video resized by ``factor`` with WanGP's Lanczos spatial upsampling (sides even)."""
    resized = upsample_space(frames.astype(np.float32) / 255.0, factor)
    return (resized * 255.0).round().astype(np.uint8)


def _segments_of_run(ctx: TaskContext, p: StitchParams) -> list:
    """The run's segments, in order, every one Complete (the chain guarantees it; checked anyway). An older
    worker's orchestrator left no parent link: its segments are found along the ``dependant_on`` chain."""
    # the orchestrator and its segments only inside this row's project (another tenant may name theirs)
    orchestrator = ctx.linked_task(p.orchestrator_task_id_ref)
    children = ctx.store.list_child_tasks(orchestrator.id) if orchestrator is not None else []
    rows = [row for row in children
            if may_link(ctx.task, row) and row.task_type == "travel_segment"
            and row.params().get("orchestrator_run_id") == p.orchestrator_run_id]
    if not rows:
        rows = _segments_by_chain(ctx, p.orchestrator_run_id, p.num_segments)
    rows.sort(key=lambda row: int(row.params().get("segment_index", -1)))
    indices = [int(row.params().get("segment_index", -1)) for row in rows]
    if indices != list(range(p.num_segments)):
        raise TaskError(f"run {p.orchestrator_run_id} has segments {indices}, expected 0..{p.num_segments - 1}")
    for row in rows:
        if row.output_location is None or row.status is not TaskStatus.COMPLETE:
            raise TaskError(f"segment {row.id} is {row.status.value}, not Complete")
    return rows


def _segments_by_chain(ctx: TaskContext, run_id: str, count: int) -> list:
    rows, seen, previous = [], set(), ctx.task.dependant_on
    while previous and previous not in seen and len(rows) < count:
        seen.add(previous)
        row = ctx.linked_task(previous)
        if row is None or row.task_type != "travel_segment" or row.params().get("orchestrator_run_id") != run_id:
            break
        rows.append(row)
        previous = row.dependant_on
    return rows


def _run_dir(run_id: str) -> str:
    return safe_filename(f"travel_{run_id}")
