"""``rife_interpolate_images``: an mp4 of ``frames`` frames going from one image to another.

RIFE runs when its weights are in the hub cache (or can be fetched); otherwise the OpenCV flow method
does. ``method`` in the result says which one ran, and ``rife_unavailable`` why RIFE did not.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field, field_validator

from source.errors import InvalidParams, ModelUnavailable
from source.generation.conversion import normalise_resolution
from source.handlers.common import Timings, output_file, read_image_rgb
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import TaskParams, parse_params, takes
from source.media.interpolation.flow import FlowInterpolator
from source.media.write import write_video_frames
from source.task_files.fetch import resolve_input

MAX_FRAMES = 1000
MAX_SIDE = 4096


class RifeParams(TaskParams):
    input_image_path1: str
    input_image_path2: str
    frames: int = Field(ge=2, le=MAX_FRAMES)
    resolution: tuple[int, int]
    fps: int = Field(default=16, ge=1, le=120)
    method: Literal["auto", "rife", "flow"] = "auto"
    output_path: str | None = None
    output_dir: str | None = None

    @field_validator("resolution", mode="before")
    @classmethod
    def _parse_resolution(cls, value: object) -> tuple[int, int]:
        try:
            width, height = (int(part) for part in normalise_resolution(value).split("x"))
        except InvalidParams as exc:
            raise ValueError(str(exc).removeprefix("params.resolution ")) from None
        if width > MAX_SIDE or height > MAX_SIDE:
            raise ValueError(f"must be at most {MAX_SIDE} on each side, got {width}x{height}")
        if width % 2 or height % 2:
            raise ValueError(f"width and height must be even for H.264 (yuv420p), got {width}x{height}")
        return width, height


def _load_input(ctx: TaskContext, value: str, name: str, size: tuple[int, int]) -> np.ndarray:
    image = read_image_rgb(resolve_input(value, name, ctx.inputs, kind="image"), name)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA) if image.shape[1::-1] != size else image


def _interpolator(ctx: TaskContext, method: str, image0: np.ndarray, image1: np.ndarray):
    """The interpolator to run, and what the result should say about the choice."""
    notes: dict[str, str] = {}
    if method in ("auto", "rife"):
        from source.media.interpolation.rife import RifeInterpolator, RifeWeights, load_rife

        weights = RifeWeights.configured()
        try:
            return RifeInterpolator(load_rife(weights, ctx.models), image0, image1), {"rife_weights": weights.describe()}
        except ModelUnavailable as exc:
            if method == "rife":
                raise
            notes["rife_unavailable"] = str(exc)
            ctx.log.info("rife_unavailable_using_flow", reason=str(exc)[:300])
    return FlowInterpolator(image0, image1), notes


@takes(RifeParams)
def handle_rife_interpolate_images(ctx: TaskContext) -> TaskOutcome:
    params = parse_params(RifeParams, ctx.params)
    timings = Timings()
    with timings.stage("load_inputs"):
        image0 = _load_input(ctx, params.input_image_path1, "input_image_path1", params.resolution)
        image1 = _load_input(ctx, params.input_image_path2, "input_image_path2", params.resolution)
    path = output_file(ctx, "interpolated.mp4", output_dir=params.output_dir, output_path=params.output_path)
    with timings.stage("prepare"):
        interpolator, notes = _interpolator(ctx, params.method, image0, image1)

    def frames():
        last = params.frames - 1
        for index in range(params.frames):
            ctx.check_cancelled()
            ctx.report_progress(index / params.frames)
            yield interpolator.frame(index / last)

    with timings.stage("interpolate_and_encode"):
        write_video_frames(frames(), path, params.fps, params.resolution)
    ctx.log.info("frames_interpolated", method=interpolator.name, frames=params.frames)
    return TaskOutcome(output_path=path, result={
        **notes, "method": interpolator.name, "frames": params.frames, "fps": params.fps,
        "resolution": f"{params.resolution[0]}x{params.resolution[1]}", "timings": timings.as_dict(),
    })
