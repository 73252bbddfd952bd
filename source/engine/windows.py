"""Sliding windows (WanGP's ``sliding_window_*``): a video longer than one window is generated window after
window, each continuing from the frames the previous one ended with, in the way its model can:

- VACE: each window's first ``sliding_window_overlap`` frames are guided by the previous window's last
  frames (mask black: keep them), the rest by the row's own guide and mask at the same positions.
- Image-to-video: as in WanGP, the previous window's last frame is the next window's start image, so the
  overlap is always 1 frame (a row's other ``sliding_window_overlap`` is adjusted to 1 and recorded).

Text-to-video models have no input to continue from; WanGP generates their windows unconnected, which is no
continuation, so they are refused (features.py) naming the models that can.

Windows are joined without duplicated frames (the regenerated overlap is dropped), each optionally
colour-matched to the frames it continues, and the video is cut to exactly ``video_length`` frames.
``sliding_window_discard_last_frames`` drops that many frames from the end of every window but the last
before the next one continues from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from source.engine.params import GenerationParams, valid_frame_count
from source.media.load import load_video

# A window's own inputs, from the row's and from the last frames generated before it (None: the first).
WindowInputs = Callable[["Window", "np.ndarray | None"], GenerationParams]


@dataclass(frozen=True)
class Continuation:
    how: str  # for result and messages
    fixed_overlap: int | None  # frames continued from, whatever sliding_window_overlap says (None: it)
    inputs: Callable[[GenerationParams, int], WindowInputs]  # (row params, overlap) -> window inputs
    takes_overlap_noise: bool  # continued frames in a context that sliding_window_overlap_noise can blur


@dataclass(frozen=True)
class Window:
    start: int  # output position of its first frame
    length: int  # frames generated (4n+1)
    final: bool


def needs_windows(params: GenerationParams) -> bool:
    return params.sliding_window_size is not None and params.video_length > params.sliding_window_size


def largest_length(size: int, step: int) -> int:
    """The longest length a window of at most ``size`` frames can have."""
    return valid_frame_count(size, step=step, toward="down")


def plan(total: int, size: int, overlap: int, discard: int, step: int) -> list[Window]:
    """The windows, decided before any runs (their lengths do not depend on what they generate)."""
    size = largest_length(size, step)
    windows: list[Window] = []
    produced = 0
    while produced < total:
        start = 0 if not windows else produced - overlap
        need = total - start
        length = min(size, valid_frame_count(need, step=step, toward="up"))
        final = start + length >= total
        windows.append(Window(start, length, final))
        produced = start + length - (0 if final else discard)
    return windows


def color_match(frames: np.ndarray, generated_overlap: np.ndarray, reference: np.ndarray,
                strength: float) -> np.ndarray:
    """Per-channel mean and spread of the window moved toward those of the frames it continues, measured
    on the overlap (the same moments in both), blended by ``strength``."""
    mean_new, std_new = generated_overlap.mean(axis=(0, 1, 2)), generated_overlap.std(axis=(0, 1, 2)) + 1e-6
    mean_ref, std_ref = reference.mean(axis=(0, 1, 2)), reference.std(axis=(0, 1, 2))
    matched = (frames - mean_new) / std_new * std_ref + mean_ref
    return np.clip(frames + strength * (matched - frames), 0.0, 1.0)


def _image(frame: np.ndarray) -> Image.Image:
    return Image.fromarray((frame * 255).round().astype(np.uint8))


def _vace_inputs(params: GenerationParams, overlap: int) -> WindowInputs:
    size, total = (params.width, params.height), params.video_length
    guide = load_video(params.video_guide, "video_guide", total, size)
    mask = load_video(params.video_mask, "video_mask", total, size) if params.video_mask is not None else None
    white, black = Image.new("RGB", size, (255, 255, 255)), Image.new("RGB", size, (0, 0, 0))

    def inputs(window: Window, previous: np.ndarray | None) -> GenerationParams:
        span = range(window.start, window.start + window.length)
        frames_guide = [guide[min(i, total - 1)] for i in span]
        frames_mask = [mask[min(i, total - 1)] if mask is not None else white for i in span]
        if previous is not None:
            frames_guide[:overlap] = [_image(frame) for frame in previous]
            frames_mask[:overlap] = [black] * overlap
        return replace(params, video_length=window.length, video_guide=frames_guide, video_mask=frames_mask)
    return inputs


def _start_image_inputs(params: GenerationParams, overlap: int) -> WindowInputs:
    def inputs(window: Window, previous: np.ndarray | None) -> GenerationParams:
        if previous is None:
            return replace(params, video_length=window.length)
        return replace(params, video_length=window.length, image_start=_image(previous[-1]))
    return inputs


CONTINUATIONS: dict[str, Continuation] = {
    "wan_vace": Continuation("guide frames kept by the mask", None, _vace_inputs, takes_overlap_noise=True),
    "wan_i2v": Continuation("last frame as the next start image", 1, _start_image_inputs, takes_overlap_noise=False),
}


def continuation_for(architecture: str) -> Continuation | None:
    return CONTINUATIONS.get(architecture)


def overlap_for(params: GenerationParams, architecture: str) -> int:
    continuation = CONTINUATIONS.get(architecture)
    fixed = continuation.fixed_overlap if continuation is not None else None
    return fixed if fixed is not None else params.sliding_window_overlap


def fit_overlap(params: GenerationParams, architecture: str) -> tuple[GenerationParams, dict[str, Any]]:
    """The row's overlap set to the one its model continues from (image-to-video: 1), with what changed."""
    overlap = overlap_for(params, architecture)
    if overlap == params.sliding_window_overlap:
        return params, {}
    return (replace(params, sliding_window_overlap=overlap),
            {"sliding_window_overlap": {"requested": params.sliding_window_overlap, "used": overlap}})


def generate_windows(params: GenerationParams, architecture: str, step: int,
                     run_window: Callable[[GenerationParams, int, int, int], np.ndarray]) -> tuple[np.ndarray, dict]:
    """``run_window(window_params, index, count, continued)`` → that window's frames (F, H, W, 3) in [0, 1];
    ``continued``: how many of its first frames continue the previous window's last ones (0 for the first)."""
    continuation = CONTINUATIONS[architecture]
    total, overlap = params.video_length, overlap_for(params, architecture)
    windows = plan(total, params.sliding_window_size, overlap, params.sliding_window_discard_last_frames, step)
    inputs = continuation.inputs(params, overlap)
    out: np.ndarray | None = None
    for index, window in enumerate(windows):
        previous = out[-overlap:] if out is not None else None
        frames = run_window(inputs(window, previous), index, len(windows), 0 if previous is None else overlap)
        if out is None:
            out = frames
        else:
            if params.sliding_window_color_correction_strength > 0:
                frames = color_match(frames, frames[:overlap], out[-overlap:],
                                     params.sliding_window_color_correction_strength)
            out = np.concatenate([out, frames[overlap:]])
        if not window.final and params.sliding_window_discard_last_frames:
            out = out[:-params.sliding_window_discard_last_frames]
    assert out is not None
    report = {"windows": len(windows), "size": params.sliding_window_size, "continuation": continuation.how,
              "overlap": overlap,
              "discard_last_frames": params.sliding_window_discard_last_frames,
              "color_correction_strength": params.sliding_window_color_correction_strength,
              "window_frames": [w.length for w in windows], "frames": total}
    return out[:total], report
