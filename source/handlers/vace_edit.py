"""``join_clips`` and ``inpaint_frames`` (the older worker's task types and parameter names): a VACE
generation whose guide is the frames around a gap (mask black: kept) and whose mask is white over the gap.

join_clips: the last ``context_frame_count`` frames of the first clip, ``gap_frame_count`` new frames, the
first ``context_frame_count`` frames of the second clip; the output is the first clip, the bridge, the
second clip (len1 + gap + len2 frames). inpaint_frames: frames [inpaint_start_frame, inpaint_end_frame)
of a video regenerated from up to ``context_frame_count`` frames on each side; the rest is kept. The
original context frames are kept as they were (VACE's regenerated copies are dropped), fps is the input's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from source.engine.params import valid_frame_count
from source.errors import InvalidParams
from source.generation.handler import generate
from source.handlers.common import resolve_task_input
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.join_plan import bridge_guide, plan_join, stitch_frames
from source.handlers.task_params import TaskParams, parse_params, takes
from source.media.video import read_video, save_video, video_fps

MAX_FRAMES = 2000
# Reigh sends an empty prompt by default (its worker generates with a space); the generation wants text, so a
# lone full stop (no content) stands in: the frames around the gap guide the bridge.
UNPROMPTED = "."
GRAY = 127
# Generation parameters passed on to the VACE generation as they are (each parsed by its one parser there).
GENERATION_KEYS = ("prompt", "negative_prompt", "seed", "num_inference_steps", "guidance_scale", "model",
                   "resolution", "flow_shift", "sample_solver", "additional_loras", "activated_loras",
                   "loras_multipliers", "phase_config")


class VaceEditParams(TaskParams):
    prompt: str = ""
    context_frame_count: int = Field(default=8, ge=1, le=MAX_FRAMES)
    fps: int | None = Field(default=None, ge=1, le=120)


class JoinClipsParams(VaceEditParams):
    starting_video_path: str | None = None
    starting_video_task_id: str | None = None
    ending_video_path: str | None = None
    ending_video_task_id: str | None = None
    gap_frame_count: int = Field(default=53, ge=1, le=MAX_FRAMES)
    replace_mode: bool = False
    keep_bridging_images: bool = False


class InpaintFramesParams(VaceEditParams):
    video_path: str | None = None
    video_task_id: str | None = None
    inpaint_start_frame: int = Field(ge=0)
    inpaint_end_frame: int = Field(ge=1)


def _generation_params(ctx: TaskContext) -> dict[str, Any]:
    return {key: ctx.params[key] for key in GENERATION_KEYS if key in ctx.params}


def vace_fill(ctx: TaskContext, guide: np.ndarray, generate_mask: np.ndarray, prompt: str) -> np.ndarray:
    """The VACE generation over ``guide`` (uint8 frames), regenerating the frames where ``generate_mask``
    is True; returns the generated frames, as many as the guide (its length is 4n+1 already)."""
    height, width = guide.shape[1:3]
    work = ctx.work_dir
    guide_path = save_video(guide, work / "vace_guide.mp4", 16)
    mask = np.where(generate_mask[:, None, None, None], 255, 0) * np.ones_like(guide)
    mask_path = save_video(mask.astype(np.uint8), work / "vace_mask.mp4", 16)
    request = {"resolution": f"{width}x{height}", **_generation_params(ctx), "prompt": prompt.strip() or UNPROMPTED,
               "video_guide": str(guide_path), "video_mask": str(mask_path), "video_length": len(guide)}
    output = generate(ctx, "vace", request)
    frames = read_video(output.paths[0], "generated", (width, height))
    if len(frames) != len(guide):
        raise InvalidParams(f"the VACE generation made {len(frames)} frames for a guide of {len(guide)}")
    return frames


def _ignored(params: VaceEditParams) -> dict[str, Any]:
    ignored = [key for key in params.ignored_params() if key not in GENERATION_KEYS]
    return {"ignored_params": ignored} if ignored else {}


@takes(JoinClipsParams)
def handle_join_clips(ctx: TaskContext) -> TaskOutcome:
    params = parse_params(JoinClipsParams, ctx.params)
    first_path = resolve_task_input(ctx, path=params.starting_video_path, path_name="starting_video_path",
                                    task_id=params.starting_video_task_id, task_id_name="starting_video_task_id",
                                    kind="video")
    second_path = resolve_task_input(ctx, path=params.ending_video_path, path_name="ending_video_path",
                                     task_id=params.ending_video_task_id, task_id_name="ending_video_task_id",
                                     kind="video")
    first = read_video(first_path, "starting_video_path")
    size = (first.shape[2], first.shape[1])
    second = read_video(second_path, "ending_video_path", size)
    # The same bridge as a join_clips_segment (handlers/join_plan.py), the clips' own frames kept (no blend).
    plan = plan_join(0, len(first), len(second), context=params.context_frame_count, gap=params.gap_frame_count,
                     replace=params.replace_mode, blend=0, keep_bridging_images=params.keep_bridging_images)
    guide, regenerate = bridge_guide(first, second, plan)
    joined = stitch_frames([first, second], [vace_fill(ctx, guide, regenerate, params.prompt)], [plan])
    fps = params.fps or video_fps(first_path)
    path = save_video(joined, ctx.output_path("joined.mp4"), fps)
    return TaskOutcome(output_path=path, result={
        "frames": len(joined), "fps": fps, "context_frame_count": plan.context, "gap_frame_count": plan.gap,
        "requested_gap_frame_count": params.gap_frame_count, "clip_frames": [len(first), len(second)],
        "replace_mode": params.replace_mode, "resolution": f"{size[0]}x{size[1]}", **_ignored(params)})


@takes(InpaintFramesParams)
def handle_inpaint_frames(ctx: TaskContext) -> TaskOutcome:
    params = parse_params(InpaintFramesParams, ctx.params)
    source_path = resolve_task_input(ctx, path=params.video_path, path_name="video_path",
                                     task_id=params.video_task_id, task_id_name="video_task_id", kind="video")
    video = read_video(source_path, "video_path")
    start, end = params.inpaint_start_frame, params.inpaint_end_frame
    if not start < end <= len(video):
        raise InvalidParams(f"params.inpaint_start_frame {start} and inpaint_end_frame {end} (exclusive) must "
                            f"name a range inside the video's {len(video)} frames")
    first = max(0, start - params.context_frame_count)
    last = min(len(video), end + params.context_frame_count)
    # 4n+1 frames: more context after the range where the video has it, then before, else padding (dropped).
    length = valid_frame_count(last - first, toward="up")
    extra = length - (last - first)
    last, extra = min(len(video), last + extra), max(0, last + extra - len(video))
    first, extra = max(0, first - extra), max(0, extra - first)
    window = video[first:last]
    guide = np.concatenate([window, np.repeat(window[-1:], extra, axis=0)]).copy()
    regenerate = np.zeros(len(guide), bool)
    regenerate[start - first:end - first] = True
    guide[regenerate] = GRAY
    generated = vace_fill(ctx, guide, regenerate, params.prompt)
    out = video.copy()
    out[start:end] = generated[start - first:end - first]
    fps = params.fps or video_fps(source_path)
    path = save_video(out, ctx.output_path("inpainted.mp4"), fps)
    return TaskOutcome(output_path=path, result={
        "frames": len(out), "fps": fps, "inpainted_frames": [start, end], "context_frames": [start - first,
                                                                                           last - end],
        "vace_frames": len(guide), **_ignored(params)})
