"""VACE control videos from a guide, as WanGP's ``video_prompt_type`` letters ask: ``P`` a pose video (the
mediapipe detector, OpenPose drawing), ``D`` a depth video (the depth estimator, near = bright)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import structlog

from source.video_utils import read_video, save_video

log = structlog.get_logger(__name__)

GUIDE_FPS = 16


def pose_video(guide: Path, out: Path) -> Path:
    """Each frame of ``guide`` replaced by the OpenPose drawing of the person in it (black when none)."""
    from source.pose.detect import default_detector
    from source.pose.draw import draw_poses

    frames = read_video(guide, "video_guide")
    detector = default_detector()
    height, width = frames.shape[1:3]
    drawn = [draw_poses(detector.detect(frame), width, height) for frame in frames]
    log.info("control_video_built", kind="pose", frames=len(drawn), detector=detector.name)
    return save_video(np.stack(drawn), out, GUIDE_FPS)


def depth_video(guide: Path, out: Path, model: str) -> Path:
    """Each frame of ``guide`` replaced by its greyscale depth map (near = bright)."""
    from source.depth import load_depth_model, to_grey_png_array

    frames = read_video(guide, "video_guide")
    estimator = load_depth_model(model)
    maps = [to_grey_png_array(estimator.estimate(frame))[..., None].repeat(3, axis=2) for frame in frames]
    log.info("control_video_built", kind="depth", frames=len(maps), model=model)
    return save_video(np.stack(maps), out, GUIDE_FPS)
