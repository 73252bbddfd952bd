"""Streaming stages of a video enhancement: frames flow through generators, one (or two) at a time, so memory
does not grow with the video's length.

- ``interpolate``: ``inserted`` new frames between each pair (RIFE or optical flow); at a scene cut (when
  asked to detect them) the earlier frame is held instead of morphing across the cut; ``loop`` also bridges
  the last frame back to the first.
- ``upscale``: each frame through a super-resolution model, then its colours matched to the source frame's
  (per channel mean and spread against the source resized to the same size; the spread's correction
  smoothed over time so contrast cannot flicker from frame to frame).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import cv2
import numpy as np
from PIL import Image

SCENE_CUT = 0.2  # mean absolute difference (0..1) between consecutive frames that counts as a cut
COLOUR_SMOOTHING = 0.8  # weight of the running colour statistics against the current frame's


class FrameUpscaler(Protocol):
    """What video_enhance needs of a super-resolution model (source/media/upscale.py's Upscaler)."""

    def upscale(self, image: Image.Image, scale: float) -> Image.Image: ...


def interpolated_count(frames: int, inserted: int, loop: bool) -> int:
    return frames * (inserted + 1) if loop else (frames - 1) * (inserted + 1) + 1


def is_scene_cut(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) / 255.0 > SCENE_CUT


def interpolate(frames: Iterable[np.ndarray], inserted: int, make: Callable[[np.ndarray, np.ndarray], Any], *,
                scene_detection: bool = False, loop: bool = False, cuts: list[int] | None = None
                ) -> Iterator[np.ndarray]:
    """``inserted`` frames between each pair of ``frames``; ``cuts`` collects the pair indices held at cuts."""
    first = previous = None
    for index, frame in enumerate(frames):
        if previous is None:
            first = frame
            yield frame
        else:
            yield from _between(previous, frame, inserted, make, scene_detection, cuts, index - 1)
            yield frame
        previous = frame
    if loop and previous is not None and first is not None:
        yield from _between(previous, first, inserted, make, scene_detection, cuts, -1)


def _between(a, b, inserted, make, scene_detection, cuts, index) -> Iterator[np.ndarray]:
    if scene_detection and is_scene_cut(a, b):
        if cuts is not None:
            cuts.append(index)
        for _ in range(inserted):
            yield a
        return
    interpolator = make(a, b)
    for k in range(1, inserted + 1):
        yield interpolator.frame(k / (inserted + 1))


def upscaled_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """(width, height) times ``factor``, even sides (H.264 yuv420p)."""
    return max(2, round(size[0] * factor / 2) * 2), max(2, round(size[1] * factor / 2) * 2)


def upscale(frames: Iterable[np.ndarray], upscaler: FrameUpscaler, factor: float, *,
            colour_fix: bool) -> Iterator[np.ndarray]:
    stats: np.ndarray | None = None
    for frame in frames:
        size = upscaled_size((frame.shape[1], frame.shape[0]), factor)
        out = np.asarray(upscaler.upscale(Image.fromarray(frame), factor).convert("RGB"))
        if out.shape[1::-1] != size:
            out = cv2.resize(out, size, interpolation=cv2.INTER_LANCZOS4)
        if colour_fix:
            reference = cv2.resize(frame, size, interpolation=cv2.INTER_LANCZOS4)
            out, stats = _match_colours(out, reference, stats)
        yield out


def _match_colours(frame: np.ndarray, reference: np.ndarray, previous: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``frame``'s per-channel mean moved to ``reference``'s and its spread scaled toward the reference's; the
    scale is smoothed with the previous frames' (exponential average), so contrast cannot flicker while the
    means follow each source frame exactly."""
    f, r = frame.reshape(-1, 3).astype(np.float32), reference.reshape(-1, 3).astype(np.float32)
    gain = (r.std(0) + 1e-3) / (f.std(0) + 1e-3)
    if previous is not None:
        gain = COLOUR_SMOOTHING * previous + (1 - COLOUR_SMOOTHING) * gain
    offset = r.mean(0) - f.mean(0) * gain
    fixed = np.clip(frame.astype(np.float32) * gain + offset, 0, 255).round().astype(np.uint8)
    return fixed, gain
