"""WanGP's post-processing of generated frames, in WanGP's order: temporal upsampling (``rife2``/``rife4``),
spatial upsampling (``lanczos1.5``/``lanczos2``), film grain; and the first-frame thumbnail of a video.

Frames are float arrays in [0, 1]: (F, H, W, 3) for a video, (H, W, 3) for an image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import structlog
from PIL import Image

from source.engine.params import GenerationParams
from source.errors import ModelUnavailable
from source.media.write import save_picture
from source.model_memory import ModelMemory

log = structlog.get_logger(__name__)

THUMBNAIL_MAX_SIDE = 512


@dataclass
class PostProcessed:
    frames: np.ndarray
    fps: int | None
    # What was applied, with which values (the row's result.postprocessing).
    applied: dict[str, Any] = field(default_factory=dict)


def postprocess(frames: np.ndarray, params: GenerationParams, fps: int | None, seed: int,
                memory: ModelMemory | None = None) -> PostProcessed:
    out = PostProcessed(frames, fps)
    if params.temporal_upsampling and frames.ndim == 4 and frames.shape[0] > 1:
        factor = int(params.temporal_upsampling.removeprefix("rife"))
        out.frames, method, notes = upsample_time(out.frames, factor, memory)
        out.fps = fps * factor if fps else fps
        out.applied["temporal_upsampling"] = {"value": params.temporal_upsampling, "factor": factor,
                                              "method": method, "frames": int(out.frames.shape[0]),
                                              "fps": out.fps, **notes}
    if params.spatial_upsampling:
        scale = float(params.spatial_upsampling.removeprefix("lanczos"))
        out.frames = upsample_space(out.frames, scale)
        height, width = out.frames.shape[-3:-1]
        out.applied["spatial_upsampling"] = {"value": params.spatial_upsampling, "scale": scale,
                                             "resolution": f"{width}x{height}", "method": "lanczos"}
    if params.film_grain_intensity > 0:
        out.frames = film_grain(out.frames, params.film_grain_intensity, params.film_grain_saturation, seed)
        out.applied["film_grain"] = {"intensity": params.film_grain_intensity,
                                     "saturation": params.film_grain_saturation}
    if out.applied:
        log.info("postprocessing_applied", **{k: v.get("value", v) for k, v in out.applied.items()})
    return out


def pair_interpolator(memory: ModelMemory | None = None
                      ) -> tuple[Callable[[np.ndarray, np.ndarray], Any], dict[str, str]]:
    """What makes the frames between two uint8 images: RIFE when its weights can be had, else the
    optical-flow method (the same choice as the ``rife_interpolate_images`` task); and what to record."""
    from source.media.interpolation.flow import FlowInterpolator

    try:
        from source.media.interpolation.rife import RifeInterpolator, RifeWeights, load_rife

        weights = RifeWeights.configured()
        net = load_rife(weights, memory)
        return (lambda a, b: RifeInterpolator(net, a, b)), {"rife_weights": weights.describe()}
    except ModelUnavailable as exc:
        log.info("rife_unavailable_using_flow", reason=str(exc)[:300])
        return FlowInterpolator, {"rife_unavailable": str(exc)}


def upsample_time(frames: np.ndarray, factor: int,
                  memory: ModelMemory | None = None) -> tuple[np.ndarray, str, dict[str, str]]:
    """``factor - 1`` frames between each pair: (F - 1) * factor + 1 frames."""
    make, notes = pair_interpolator(memory)
    images = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    out = [images[0]]
    method = "flow"
    for image0, image1 in zip(images[:-1], images[1:], strict=True):
        interpolator = make(image0, image1)
        method = interpolator.name
        out += [interpolator.frame(k / factor) for k in range(1, factor)] + [image1]
    return np.stack(out).astype(np.float32) / 255.0, method, notes


def upsample_space(frames: np.ndarray, scale: float) -> np.ndarray:
    """Lanczos resize by ``scale``; sides rounded to even numbers (H.264 yuv420p needs them)."""
    height, width = frames.shape[-3:-1]
    size = (max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2))
    resize = lambda f: cv2.resize(f.astype(np.float32), size, interpolation=cv2.INTER_LANCZOS4)  # noqa: E731
    resized = np.stack([resize(f) for f in frames]) if frames.ndim == 4 else resize(frames)
    return np.clip(resized, 0.0, 1.0)


def film_grain(frames: np.ndarray, intensity: float, saturation: float, seed: int) -> np.ndarray:
    """WanGP's grain (from LTX-Video's ComfyUI node): Gaussian noise, stronger in red and blue, mixed with
    its green channel by ``1 - saturation`` (0: grey grain, 1: coloured), added at ``intensity``. Seeded
    from the generation's seed so a row replays to the same file."""
    rng = np.random.default_rng(seed)
    grain = rng.standard_normal(frames.shape).astype(np.float32)
    grain[..., 0] *= 2
    grain[..., 2] *= 3
    grain = grain * saturation + grain[..., 1:2] * (1 - saturation)
    return np.clip(frames + intensity * grain, 0.0, 1.0)


def write_thumbnail(first_frame: np.ndarray, video_path: Path) -> Path:
    """A JPEG of the video's first frame beside it (``<video stem>_thumb.jpg``), at most 512 px a side."""
    image = Image.fromarray((np.clip(first_frame, 0, 1) * 255).round().astype(np.uint8))
    image.thumbnail((THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE))
    path = video_path.with_name(f"{video_path.stem}_thumb.jpg")
    return save_picture(image, path, quality=90)
