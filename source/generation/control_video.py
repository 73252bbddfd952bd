"""VACE inputs as WanGP's ``video_prompt_type`` letters ask (source/engine/params.py lists them): which of
the mask and reference images are used, and the control video built from the guide: ``P`` a pose video
(the mediapipe detector, OpenPose drawing), ``D`` a depth video (the depth estimator, near = bright).

WanGP's own letters work the same way: ``V`` says there is a control video, a process letter (``P``,
``D``, ...) says what is extracted from it, ``I`` uses the reference images."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from source.errors import InvalidParams
from source.media.video import read_video, save_video
from source.model_memory import ModelMemory

log = structlog.get_logger(__name__)

GUIDE_FPS = 16


def select_vace_inputs(values: dict[str, Any], letters: str,
                       available: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``values`` without the inputs the letters leave out, and the names left out. Without letters every
    input given is used (older rows); with letters, an input whose letter is absent is unused (and
    reported), and a letter whose input is missing from ``available`` (all tiers) is an error."""
    if not letters:
        return values, ()
    values, ignored = dict(values), []
    for letter, name in (("M", "video_mask"), ("I", "image_refs")):
        if letter in letters and not available.get(name):
            raise InvalidParams(f"params.video_prompt_type {letters!r} has {letter} but params.{name} is missing")
        if letter not in letters and values.get(name):
            values.pop(name)
            ignored.append(name)
    if not {"V", "P", "D"} & set(letters):
        raise InvalidParams(f"params.video_prompt_type {letters!r}: say how to use video_guide: V (as is), "
                            f"P (pose) or D (depth)")
    if ignored:
        log.warning("params_ignored", keys=ignored, reason=f"video_prompt_type {letters!r} does not use them")
    return values, tuple(ignored)


def build_control_guide(values: dict[str, Any], letters: str, work_dir: Path,
                        depth_model: str | None = None, memory: ModelMemory | None = None) -> dict[str, Any]:
    """``values`` with ``video_guide`` replaced by its pose (P) or depth (D) video, written to ``work_dir``."""
    guide = values.get("video_guide")
    if not guide or not ({"P", "D"} & set(letters)):
        return values
    work_dir.mkdir(parents=True, exist_ok=True)
    if "P" in letters:
        return {**values, "video_guide": str(pose_video(Path(guide), work_dir / "control_pose.mp4", memory))}
    from source.media.depth import DEFAULT_DEPTH_MODEL

    model = depth_model or DEFAULT_DEPTH_MODEL
    return {**values, "video_guide": str(depth_video(Path(guide), work_dir / "control_depth.mp4", model, memory))}


def pose_video(guide: Path, out: Path, memory: ModelMemory | None = None) -> Path:
    """Each frame of ``guide`` replaced by the OpenPose drawing of the person in it (black when none)."""
    from source.media.pose.detect import default_detector
    from source.media.pose.draw import draw_poses

    frames = read_video(guide, "video_guide")
    detector = default_detector(memory)
    height, width = frames.shape[1:3]
    drawn = [draw_poses(detector.detect(frame), width, height) for frame in frames]
    log.info("control_video_built", kind="pose", frames=len(drawn), detector=detector.name)
    return save_video(np.stack(drawn), out, GUIDE_FPS)


def depth_video(guide: Path, out: Path, model: str, memory: ModelMemory | None = None) -> Path:
    """Each frame of ``guide`` replaced by its greyscale depth map (near = bright)."""
    from source.media.depth import load_depth_model, to_grey_png_array

    frames = read_video(guide, "video_guide")
    estimator = load_depth_model(model, memory)
    maps = [to_grey_png_array(estimator.estimate(frame))[..., None].repeat(3, axis=2) for frame in frames]
    log.info("control_video_built", kind="depth", frames=len(maps), model=model)
    return save_video(np.stack(maps), out, GUIDE_FPS)
