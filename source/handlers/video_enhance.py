"""``video_enhance`` (Reigh's video enhance tool): frame interpolation and/or super-resolution upscaling of a
video, in one streaming pass (decode → interpolate → upscale → encode, frame by frame; memory does not grow
with the video's length: benchmarks/video_enhance_memory.py).

Interpolation inserts ``interpolation.num_frames`` frames between each pair (RIFE, or the optical-flow method
when RIFE's weights cannot be had); ``use_calculated_fps`` multiplies the rate by num_frames + 1 (same
duration), otherwise the video plays at ``interpolation.fps`` or its own rate (slow motion). Upscaling runs
the super-resolution model of source/media/upscale.py on every frame, with a temporal colour fix. The
source's sound is kept when the duration is.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

from pydantic import Field

from source.engine.postprocess import pair_interpolator
from source.errors import InvalidParams, ModelUnavailable
from source.handlers.app_fields import split_app_fields
from source.handlers.common import Timings
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import TaskParams, parse_params, takes
from source.media.audio import has_audio, mux_audio, read_audio
from source.media.enhance import interpolate, interpolated_count, upscale, upscaled_size
from source.media.video import iter_video_frames, video_info
from source.media.write import write_video_frames
from source.task_files.fetch import resolve_input

Quality = Literal["low", "medium", "high", "maximum"]
WriteMode = Literal["fast", "balanced", "small"]
CRF = {"maximum": 10, "high": 16, "medium": 22, "low": 28}
PRESET = {"fast": "veryfast", "balanced": "medium", "small": "slow"}
MP4 = "X264 (.mp4)"
MAX_FRAMES = 20_000
UPSCALER_MODULE = "source.media.upscale"  # the image-upscale task's super-resolution models


class InterpolationParams(TaskParams):
    num_frames: int = Field(1, ge=1, le=4)
    use_calculated_fps: bool = True
    fps: float | None = Field(None, gt=0, le=240)
    use_scene_detection: bool = False
    loop: bool = False
    video_quality: Quality = "high"
    video_write_mode: WriteMode = "fast"


class UpscaleParams(TaskParams):
    upscale_factor: float = Field(2.0, ge=1.0, le=4.0)
    color_fix: bool = True
    output_quality: Quality = "high"
    output_write_mode: WriteMode | None = None
    output_format: str = MP4
    preserve_audio: bool = True
    model: str | None = None  # one of source/media/upscale.py's models (its default when None)
    # FlashVSR's own knobs (Reigh's worker runs FlashVSR): no equivalent here, refused when sent
    quality: Any = None
    acceleration: Any = None


class VideoEnhanceParams(TaskParams):
    video_url: str = Field(min_length=1)
    enable_interpolation: bool = False
    enable_upscale: bool = False
    interpolation: InterpolationParams = Field(default_factory=InterpolationParams)
    upscale: UpscaleParams = Field(default_factory=UpscaleParams)


@takes(VideoEnhanceParams)
def handle_video_enhance(ctx: TaskContext) -> TaskOutcome:
    p = parse_params(VideoEnhanceParams, ctx.params)
    if not (p.enable_interpolation or p.enable_upscale):
        raise InvalidParams("params: enable_interpolation or enable_upscale must be true (nothing to do)")
    up, it = p.upscale, p.interpolation
    if p.enable_upscale:
        for name in ("quality", "acceleration"):
            if getattr(up, name) is not None:
                raise InvalidParams(f"params.upscale.{name} is a FlashVSR setting; this worker's upscaler has no "
                                    f"such setting (leave it out)")
        if up.output_format != MP4:
            raise InvalidParams(f"params.upscale.output_format {up.output_format!r} is not supported; only {MP4!r}")
    source = resolve_input(p.video_url, "video_url", ctx.inputs, kind="video")
    info = video_info(source, "video_url")
    if info.frames > MAX_FRAMES:
        raise InvalidParams(f"params.video_url has {info.frames} frames; the limit is {MAX_FRAMES}")
    upscaler = _load_upscaler(up.model) if p.enable_upscale else None  # before any frame is decoded
    timings, notes, cuts = Timings(), {}, []
    frames = iter_video_frames(source, "video_url")
    count, fps, size = info.frames, info.fps, info.size
    if p.enable_interpolation:
        make, notes = pair_interpolator()
        frames = interpolate(frames, it.num_frames, make, scene_detection=it.use_scene_detection, loop=it.loop,
                             cuts=cuts)
        count = interpolated_count(info.frames, it.num_frames, it.loop)
        fps = info.fps * (it.num_frames + 1) if it.use_calculated_fps else it.fps or info.fps
    if upscaler is not None:
        frames = upscale(frames, upscaler, up.upscale_factor, colour_fix=up.color_fix)
        size = upscaled_size(size, up.upscale_factor)
    qualities = ([it.video_quality] if p.enable_interpolation else []) + ([up.output_quality] if p.enable_upscale else [])
    crf = min(CRF[q] for q in qualities)
    mode = (up.output_write_mode if p.enable_upscale and up.output_write_mode else
            it.video_write_mode if p.enable_interpolation else "fast")
    path = ctx.output_path("enhanced.mp4")

    def progress(stream):
        for index, frame in enumerate(stream):
            ctx.check_cancelled()
            ctx.report_progress(index / max(count, 1))
            yield frame

    with timings.stage("enhance_and_encode"):
        write_video_frames(progress(frames), path, fps, size, preset=PRESET[mode], crf=crf)
    sound = _keep_sound(path, source, info, count, fps, keep=up.preserve_audio or not p.enable_upscale)
    ctx.log.info("video_enhanced", frames=count, fps=fps, size=size, interpolated=p.enable_interpolation,
                 upscaled=p.enable_upscale)
    ignored = [key for key in p.ignored_params()
               if not (key.startswith("interpolation.") and not p.enable_interpolation)
               and not (key.startswith("upscale.") and not p.enable_upscale)]
    result: dict[str, Any] = {
        "frames": count, "fps": round(fps, 3), "source_frames": info.frames, "source_fps": round(info.fps, 3),
        "resolution": f"{size[0]}x{size[1]}", "crf": crf, "audio": sound, "timings": timings.as_dict(),
        **split_app_fields(ignored)}
    if p.enable_interpolation:
        result["interpolation"] = {"method": "rife" if "rife_weights" in notes else "flow", "inserted": it.num_frames,
                                   "scene_cuts_held": cuts, **notes}
    if upscaler is not None:
        result["upscale"] = {"factor": up.upscale_factor, "model": getattr(upscaler, "name", None),
                             "color_fix": up.color_fix}
    unused = [name for name, enabled in (("interpolation", p.enable_interpolation), ("upscale", p.enable_upscale))
              if not enabled and name in ctx.params]
    if unused:
        result["disabled_sections"] = unused  # sent, but their enable_* switch is off
    return TaskOutcome(output_path=path, result=result)


def _load_upscaler(model: str | None):
    try:
        module = importlib.import_module(UPSCALER_MODULE)
    except ImportError:
        raise ModelUnavailable("params.enable_upscale: this worker version has no super-resolution model "
                               "(source/media/upscale.py); send enable_upscale false") from None
    return module.load_upscaler(model) if model else module.load_upscaler()


def _keep_sound(path, source, info, count: int, fps: float, *, keep: bool) -> str | None:
    """The source's sound into the output when its duration is unchanged (within a frame)."""
    if not keep or not has_audio(source):
        return None
    if abs(count / fps - info.frames / info.fps) > 1.0 / min(fps, info.fps):
        return "dropped: the video's duration changed (slow motion)"
    mux_audio(path, read_audio(source, "video_url"))
    return "source"
