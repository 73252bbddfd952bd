"""join_clips_orchestrator → join_clips_segment × N-1 → join_final_stitch (Reigh's "join clips").

The orchestrator reads the clips' lengths, plans every bridge (join_plan.py) and inserts the children:
with ``use_parallel_joins`` (the default) the bridges are independent rows that any free worker claims, each
making only its transition, and the stitch assembles clips and transitions once; otherwise a chain, each join
extending the previous join's video. The stitch adds the sound (``audio_url``, else the clips' own) and
completes the orchestrator. Clips are named by URL/path with a frame range (no intermediate files), so a
child runs on any worker that can read the inputs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from source.db.models import NewTask, TaskStatus, child_task_id
from source.errors import InvalidParams, TaskError
from source.generation.conversion import lift_orchestrator_details
from source.handlers.app_fields import split_app_fields
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.join_plan import (
    ClipRef,
    JoinPlan,
    bridge_guide,
    check_kept_lengths,
    plan_join,
    stitch_frames,
    stitch_spans,
    stitched_length,
)
from source.handlers.task_params import TaskParams, parse_params, takes
from source.handlers.vace_edit import vace_fill
from source.media.audio import add_soundtrack, spans_to_pieces
from source.media.video import read_video, resample_frames, save_video, video_info
from source.orchestrators.checks import check_model, check_resolution
from source.orchestrators.children import ChildSpec, check_child_count, child_payload, spawn_chain
from source.task_files.fetch import resolve_input
from source.task_files.paths import safe_filename

MAX_FRAMES = 2000
MAX_CLIPS = 100
DEFAULT_FPS = 16
MAX_BLEND = 15  # cross-fade of a bridge's context into its clip: min(context, 15), as Reigh's worker
STITCH_KEY = "stitch"
VACE_ARCHITECTURES = ("wan_vace",)


# -- parameters ------------------------------------------------------------------------------------------
class JoinOverride(TaskParams):
    """One entry of ``per_join_settings``: what one bridge does differently."""

    prompt: str | None = None
    negative_prompt: str | None = None
    gap_frame_count: int | None = Field(None, ge=1, le=MAX_FRAMES)
    context_frame_count: int | None = Field(None, ge=1, le=MAX_FRAMES)
    replace_mode: bool | None = None
    model: str | None = None
    num_inference_steps: int | None = Field(None, ge=1, le=200)
    guidance_scale: float | None = None
    seed: int | None = None
    additional_loras: dict[str, float] | None = None
    # one value for the whole video: accepted only when equal to the run's
    resolution: Any = None
    fps: int | None = None
    priority: int | None = None


class ClipEntry(TaskParams):
    url: str = Field(min_length=1)
    name: str | None = None


class JoinSettings(TaskParams):
    """What join_clips_orchestrator and edit_video_orchestrator share (Reigh's join settings)."""

    run_id: str = Field(min_length=1, max_length=200)
    prompt: str = ""
    negative_prompt: str = ""
    gap_frame_count: int = Field(53, ge=1, le=MAX_FRAMES)
    context_frame_count: int = Field(8, ge=1, le=MAX_FRAMES)
    replace_mode: bool = False
    keep_bridging_images: bool = False
    enhance_prompt: bool = False
    model: str | None = None  # None: the vace task type's default model
    num_inference_steps: int | None = Field(None, ge=1, le=200)
    guidance_scale: float | None = None
    flow_shift: float | None = None
    seed: int = -1
    priority: int = 0
    resolution: Any = None
    fps: int | None = Field(None, ge=1, le=120)
    use_input_video_resolution: bool = False
    use_input_video_fps: bool = False
    audio_url: str | None = None
    vid2vid_init_strength: float | None = None
    per_join_settings: list[JoinOverride] = Field(default_factory=list)
    additional_loras: dict[str, float] = Field(default_factory=dict)
    phase_config: dict[str, Any] | None = None
    blend_frames: int | None = Field(None, ge=0, le=MAX_FRAMES)


class JoinDetails(JoinSettings):
    clip_list: list[ClipEntry] = Field(min_length=1, max_length=MAX_CLIPS)
    loop_first_clip: bool = False
    use_parallel_joins: bool = True


class JoinSegmentParams(TaskParams):
    orchestrator_task_id_ref: str
    orchestrator_run_id: str
    join_index: int = Field(ge=0)
    start_clip: ClipRef | None = None  # None: the previous join's video (a chain)
    end_clip: ClipRef
    plan: JoinPlan
    transition_only: bool
    resolution: str
    fps: int = Field(ge=1, le=120)
    model: str | None = None
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    flow_shift: float | None = None
    additional_loras: dict[str, float] = Field(default_factory=dict)
    phase_config: dict[str, Any] | None = None


class JoinStitchParams(TaskParams):
    orchestrator_task_id_ref: str
    orchestrator_run_id: str
    clips: list[ClipRef]
    plans: list[JoinPlan]
    join_keys: list[str]
    chain_mode: bool
    resolution: str
    fps: int = Field(ge=1, le=120)
    expected_frames: int = Field(ge=1)
    audio_url: str | None = None
    output_name: str = "joined.mp4"
    # per bridge, the source frames whose sound plays under it (None: silence); its ``first`` is the frame
    # the bridge's gap stands for
    bridge_sound: list[ClipRef | None] = Field(default_factory=list)


# -- orchestrator ----------------------------------------------------------------------------------------
@takes(JoinDetails, translated=True)
def handle_join_clips_orchestrator(ctx: TaskContext) -> TaskOutcome:
    lifted = lift_orchestrator_details(ctx.params)
    d = parse_params(JoinDetails, lifted.params)
    entries = list(d.clip_list)
    clips = [ClipRef(url=entry.url) for entry in entries]
    if d.loop_first_clip:
        # the first clip, then the same clip backwards: a bridge back to where it started
        clips = [clips[0], ClipRef(url=entries[0].url, reverse=True)]
    elif len(clips) < 2:
        raise InvalidParams("params.orchestrator_details.clip_list needs at least 2 clips (or loop_first_clip)")
    ignored = [f"clip_list[{i}].{key}" for i, entry in enumerate(entries) for key in entry.ignored_params()]
    if d.loop_first_clip and len(entries) > 1:
        ignored += [f"clip_list[{i}]" for i in range(1, len(entries))]
    return spawn_join_run(ctx, d, clips, parallel=d.use_parallel_joins, ignored=d.ignored_params() + ignored)


def spawn_join_run(ctx: TaskContext, d: JoinSettings, clips: list[ClipRef], *, parallel: bool,
                   ignored: list[str], exact_gaps: bool = False, blend: int | None = None,
                   result: dict[str, Any] | None = None, output_name: str = "joined.mp4",
                   bridge_sound: list[ClipRef | None] | None = None) -> TaskOutcome:
    """Plan the bridges between ``clips`` and insert the children (shared with edit_video_orchestrator)."""
    joins = len(clips) - 1
    check_child_count(ctx, joins + 1)
    _refuse_unsupported(ctx, d, joins)
    if d.model is not None:
        check_model("params.model", d.model, VACE_ARCHITECTURES, "joining clips")
    adjusted: dict[str, Any] = {}
    infos = [video_info(resolve_input(clip.url, f"clip {i}", ctx.inputs, kind="video"), f"clip {i}")
             for i, clip in enumerate(clips)]
    fps = min(round(info.fps) for info in infos) if d.use_input_video_fps else d.fps or DEFAULT_FPS
    size = infos[0].size if d.use_input_video_resolution or d.resolution is None else d.resolution
    width, height = check_resolution("params.resolution", list(size) if isinstance(size, tuple) else size,
                                     adjusted=adjusted)
    lengths = [_clip_length(clip, info, fps, i) for i, (clip, info) in enumerate(zip(clips, infos, strict=True))]
    plans = []
    for i in range(joins):
        o = d.per_join_settings[i] if i < len(d.per_join_settings) else JoinOverride()
        context = o.context_frame_count or d.context_frame_count
        plans.append(plan_join(
            i, lengths[i], lengths[i + 1], context=context, gap=o.gap_frame_count or d.gap_frame_count,
            replace=d.replace_mode if o.replace_mode is None else o.replace_mode,
            blend=min(context, MAX_BLEND) if blend is None and d.blend_frames is None else (
                d.blend_frames if blend is None else blend),
            keep_bridging_images=d.keep_bridging_images, exact_gap=exact_gaps))
    check_kept_lengths(lengths, plans)
    expected = stitched_length(lengths, plans)
    resolution = f"{width}x{height}"
    keys = [f"join_{i:03d}" for i in range(joins)]
    specs = [ChildSpec(keys[i], "join_clips_segment", _segment_payload(
        ctx, d, i, clips, plans[i], parallel=parallel, resolution=resolution, fps=fps),
        after=None if parallel or i == 0 else keys[i - 1]) for i in range(joins)]
    specs.append(ChildSpec(STITCH_KEY, "join_final_stitch", child_payload(JoinStitchParams(
        orchestrator_task_id_ref=ctx.task.id, orchestrator_run_id=d.run_id, clips=clips, plans=plans,
        join_keys=keys, chain_mode=not parallel, resolution=resolution, fps=fps, expected_frames=expected,
        audio_url=d.audio_url, output_name=output_name, bridge_sound=bridge_sound or [])), after=keys[-1]))
    ctx.log.info("joins_planned", run_id=d.run_id, joins=joins, parallel=parallel, expected_frames=expected)
    summary = {"run_id": d.run_id, "joins": joins, "mode": "parallel" if parallel else "chain",
               "expected_frames": expected, "clip_frames": lengths, "fps": fps, "resolution": resolution,
               "gap_frame_counts": [p.gap for p in plans], **(result or {}), **split_app_fields(ignored)}
    if adjusted:
        summary["adjusted"] = adjusted
    return spawn_chain(ctx, specs, result=summary, priority=d.priority)


def _refuse_unsupported(ctx: TaskContext, d: JoinSettings, joins: int) -> None:
    where = "params.orchestrator_details"
    if d.enhance_prompt:
        raise InvalidParams(f"{where}.enhance_prompt: this worker has no vision-language model to write the "
                            f"bridges' prompts; send enhance_prompt false and a prompt (or per_join_settings[].prompt)")
    if d.vid2vid_init_strength is not None:
        raise InvalidParams(f"{where}.vid2vid_init_strength: starting a bridge from the replaced frames (vid2vid) "
                            f"is not supported; leave it out (the bridge is generated from the context frames)")
    if d.priority > ctx.task.priority:
        raise InvalidParams(f"{where}.priority {d.priority} is above this row's own priority "
                            f"{ctx.task.priority}: children may only run at or below it")
    if len(d.per_join_settings) > joins:
        raise InvalidParams(f"{where}.per_join_settings has {len(d.per_join_settings)} entries for {joins} joins")
    for i, o in enumerate(d.per_join_settings):
        for name in ("resolution", "fps", "priority"):
            value = getattr(o, name)
            if value is not None and value != getattr(d, name):
                raise InvalidParams(f"{where}.per_join_settings[{i}].{name}: one {name} serves the whole video; "
                                    f"set it once, not per join")
        if o.model is not None:
            check_model(f"{where}.per_join_settings[{i}].model", o.model, VACE_ARCHITECTURES, "joining clips")


def _clip_length(clip: ClipRef, info, fps: int, index: int) -> int:
    total = max(1, round(info.frames * fps / info.fps)) if abs(info.fps - fps) >= 1e-3 else info.frames
    count = clip.count if clip.count is not None else total - clip.first
    if clip.first + count > total or count < 1:
        raise InvalidParams(f"clip {index}: frames {clip.first}..{clip.first + count - 1} are outside its "
                            f"{total} frames at {fps} fps")
    return count


def _segment_payload(ctx: TaskContext, d: JoinSettings, i: int, clips: list[ClipRef], plan: JoinPlan, *,
                     parallel: bool, resolution: str, fps: int) -> dict[str, Any]:
    o = d.per_join_settings[i] if i < len(d.per_join_settings) else JoinOverride()

    def pick(name: str) -> Any:
        value = getattr(o, name)
        return getattr(d, name) if value is None else value

    return child_payload(JoinSegmentParams(
        orchestrator_task_id_ref=ctx.task.id, orchestrator_run_id=d.run_id, join_index=i,
        start_clip=clips[i] if parallel or i == 0 else None, end_clip=clips[i + 1], plan=plan,
        transition_only=parallel, resolution=resolution, fps=fps, model=pick("model"), prompt=pick("prompt"),
        negative_prompt=pick("negative_prompt"), seed=pick("seed"), num_inference_steps=pick("num_inference_steps"),
        guidance_scale=pick("guidance_scale"), flow_shift=d.flow_shift,
        additional_loras={**d.additional_loras, **(o.additional_loras or {})}, phase_config=d.phase_config))


# -- clips -----------------------------------------------------------------------------------------------
def load_clip(ctx: TaskContext, clip: ClipRef, name: str, size: tuple[int, int], fps: int) -> tuple[np.ndarray, Path]:
    """The clip's frames as the plan counts them: at ``fps``, its frame range, backwards if asked."""
    path = resolve_input(clip.url, name, ctx.inputs, kind="video")
    frames = resample_frames(read_video(path, name, size), video_info(path, name).fps, fps)
    count = clip.count if clip.count is not None else len(frames) - clip.first
    frames = frames[clip.first: clip.first + count]
    if len(frames) != count or count < 1:
        raise TaskError(f"{name}: the video has {len(frames)} frames where {count} from frame {clip.first} were "
                        f"planned; was it replaced since the orchestrator read it?")
    return (frames[::-1].copy() if clip.reverse else frames), path


def _size(resolution: str) -> tuple[int, int]:
    width, height = (int(v) for v in resolution.split("x"))
    return width, height


# -- segment ---------------------------------------------------------------------------------------------
@takes(JoinSegmentParams)
def handle_join_clips_segment(ctx: TaskContext) -> TaskOutcome:
    p = parse_params(JoinSegmentParams, ctx.params)
    size = _size(p.resolution)
    if p.start_clip is not None:
        start, _ = load_clip(ctx, p.start_clip, "start_clip", size, p.fps)
    else:
        previous = _row_output(ctx, ctx.task.dependant_on, "the previous join")
        start = read_video(resolve_input(previous, "previous join video", ctx.inputs, kind="video"),
                           "previous join video", size)
    end, _ = load_clip(ctx, p.end_clip, "end_clip", size, p.fps)
    ctx.check_cancelled()
    guide, regenerate = bridge_guide(start, end, p.plan)
    bridge = vace_fill(ctx, guide, regenerate, p.prompt)
    name = f"join_{p.join_index:03d}_{'transition' if p.transition_only else 'joined'}.mp4"
    frames = bridge if p.transition_only else stitch_frames([start, end], [bridge], [p.plan])
    path = save_video(frames, ctx.output_path(name, subdir=run_dir(p.orchestrator_run_id)), p.fps)
    ctx.log.info("join_bridged", join_index=p.join_index, frames=len(frames), gap=p.plan.gap)
    return TaskOutcome(output_path=path, result={
        "frames": len(frames), "join_index": p.join_index, "transition_only": p.transition_only,
        "orchestrator_run_id": p.orchestrator_run_id, "plan": p.plan.model_dump(),
        **split_app_fields(p.ignored_params())})


def _row_output(ctx: TaskContext, task_id: str | None, what: str) -> str:
    row = ctx.store.get_task(task_id) if task_id else None
    if row is None or row.parent_task_id != ctx.task.parent_task_id or row.project_id != ctx.task.project_id:
        raise TaskError(f"{what}: task {task_id} is not a sibling of this row")
    if row.status is not TaskStatus.COMPLETE or not row.output_location:
        raise TaskError(f"{what}: task {task_id} is {row.status.value} with no output")
    return ctx.output_of(row.output_location)


# -- final stitch ----------------------------------------------------------------------------------------
@takes(JoinStitchParams)
def handle_join_final_stitch(ctx: TaskContext) -> TaskOutcome:
    p = parse_params(JoinStitchParams, ctx.params)
    parent = ctx.task.parent_task_id
    if parent is None or parent != p.orchestrator_task_id_ref:
        raise TaskError("join_final_stitch runs only as the child of its orchestrator (parent_task_id)")
    siblings = {row.child_key: row for row in ctx.store.list_child_tasks(parent)}
    joins = [siblings.get(key) for key in p.join_keys]
    if (missing := [key for key, row in zip(p.join_keys, joins, strict=True) if row is None]):
        raise TaskError(f"the joins {missing} of run {p.orchestrator_run_id} do not exist")
    pending = next((row for row in joins if row.status is not TaskStatus.COMPLETE), None)
    if pending is not None:
        return _wait_for(ctx, pending)
    size = _size(p.resolution)
    out = ctx.output_path(p.output_name, subdir=run_dir(p.orchestrator_run_id))
    clips = [load_clip(ctx, clip, f"clip {i}", size, p.fps) for i, clip in enumerate(p.clips)]
    if p.chain_mode:
        # the last join's video is already the whole one: copied as it is, never encoded again
        last = resolve_input(ctx.output_of(joins[-1].output_location), "last join video", ctx.inputs, kind="video")
        partial = out.with_name(f".{out.name}.partial")
        shutil.copyfile(last, partial)
        os.replace(partial, out)
        frames = video_info(out, "last join video").frames
    else:
        bridges = [read_video(resolve_input(ctx.output_of(row.output_location), f"transition {i}", ctx.inputs,
                                            kind="video"), f"transition {i}", size) for i, row in enumerate(joins)]
        ctx.check_cancelled()
        stitched = stitch_frames([c for c, _ in clips], bridges, p.plans)
        save_video(stitched, out, p.fps)
        frames = len(stitched)
    if frames != p.expected_frames:
        out.unlink(missing_ok=True)
        raise TaskError(f"stitched {frames} frames where the plan makes {p.expected_frames}")
    audio = resolve_input(p.audio_url, "audio_url", ctx.inputs, kind=None) if p.audio_url else None
    origins = [(None if clip.reverse else path, clip.first) for clip, (_, path) in zip(p.clips, clips, strict=True)]
    bridge_origins = [(None, 0) if ref is None else (
        resolve_input(ref.url, f"bridge_sound[{i}]", ctx.inputs, kind="video"), ref.first - p.plans[i].context)
        for i, ref in enumerate(p.bridge_sound)]
    sound = add_soundtrack(out, audio_file=audio, pieces=spans_to_pieces(
        stitch_spans([len(c) for c, _ in clips], p.plans, origins, bridge_origins), p.fps))
    ctx.log.info("joins_stitched", frames=frames, joins=len(joins), audio=sound)
    return TaskOutcome(output_path=out, completes_parent=True, result={
        "frames": frames, "fps": p.fps, "orchestrator_run_id": p.orchestrator_run_id, "audio": sound,
        "join_task_ids": [row.id for row in joins], "mode": "chain" if p.chain_mode else "parallel"})


def _wait_for(ctx: TaskContext, pending) -> TaskOutcome:
    """Parallel joins finish in any order, and a row waits for one row only: a stitch claimed before every
    transition is done hands over to a copy of itself that waits for the first unfinished one, and ends."""
    if pending.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise TaskError(f"join {pending.id} ended {pending.status.value}: {pending.error_message}")
    key = f"{STITCH_KEY}_after_{pending.child_key}"
    parent = ctx.task.parent_task_id
    ctx.store.add_child_tasks(parent, [NewTask(ctx.task.task_type, dict(ctx.params), dependant_on=pending.id,
                                               priority=ctx.task.priority, project_id=ctx.task.project_id,
                                               child_key=key)])
    ctx.log.info("stitch_waits", waiting_for=pending.id, continued_by=child_task_id(parent, key))
    return TaskOutcome(result={"waiting_for": pending.id, "continued_by": child_task_id(parent, key)})


def run_dir(run_id: str) -> str:
    return safe_filename(f"join_clips_{run_id}")

