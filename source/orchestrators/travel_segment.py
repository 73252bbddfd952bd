"""A travel segment's VACE inputs: the guide video (previous segment's tail or the start keyframe, the end
keyframe, optional fades of both keyframes into the gap) and the mask marking kept vs generated frames."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from source.errors import InvalidParams

GREY = 128
CURVES = ("linear", "ease_in", "ease_out", "ease_in_out")


@dataclass(frozen=True)
class Fade:
    """A keyframe shown faintly in the generated gap, its strength following a curve from ``high_point``
    next to the keyframe down to ``low_point``, over ``duration_factor`` of the gap."""

    low_point: float = 0.0
    high_point: float = 1.0
    curve_type: str = "ease_in_out"
    duration_factor: float = 0.0

    @classmethod
    def parse(cls, name: str, text: str | None) -> Fade:
        if text is None or not str(text).strip():
            return cls()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidParams(f"{name} is not valid JSON: {exc.msg}") from None
        if not isinstance(raw, dict):
            raise InvalidParams(f"{name} must be a JSON object")
        unknown = set(raw) - {"low_point", "high_point", "curve_type", "duration_factor"}
        if unknown:
            raise InvalidParams(f"{name}: unknown keys {sorted(unknown)}")
        try:
            fade = cls(float(raw.get("low_point", 0.0)), float(raw.get("high_point", 1.0)),
                       str(raw.get("curve_type", "ease_in_out")), float(raw.get("duration_factor", 0.0)))
        except (TypeError, ValueError):
            raise InvalidParams(f"{name}: low_point, high_point and duration_factor must be numbers") from None
        if fade.curve_type not in CURVES:
            raise InvalidParams(f"{name}: curve_type must be one of {', '.join(CURVES)}, got {fade.curve_type!r}")
        if not (0.0 <= fade.low_point <= 1.0 and 0.0 <= fade.high_point <= 1.0 and 0.0 <= fade.duration_factor <= 1.0):
            raise InvalidParams(f"{name}: low_point, high_point and duration_factor must lie in [0, 1]")
        return fade

    def strengths(self, gap: int) -> np.ndarray:
        """Strength for the first ``round(duration_factor * gap)`` frames of the gap, nearest the keyframe first."""
        count = int(round(self.duration_factor * gap))
        if count <= 0:
            return np.zeros(0)
        t = np.arange(count) / max(count - 1, 1)
        eased = {"linear": t, "ease_in": t**2, "ease_out": 1 - (1 - t) ** 2,
                 "ease_in_out": 3 * t**2 - 2 * t**3}[self.curve_type]
        return self.high_point + (self.low_point - self.high_point) * eased


@dataclass(frozen=True)
class OverlapAdjustments:
    """Tweaks to the frames a later segment takes from its predecessor (guidance only)."""

    strength: float = 0.0  # added to the frames' guide strength (1.0): below 0 fades them towards grey
    desaturate: float = 0.0  # 0..1 towards greyscale
    brightness: float = 0.0  # -1..1, added as a fraction of full scale

    def apply(self, frames: np.ndarray) -> np.ndarray:
        out = frames.astype(np.float32)
        if self.desaturate:
            grey = out @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            out = out + (grey[..., None] - out) * float(np.clip(self.desaturate, 0.0, 1.0))
        if self.brightness:
            out = out + 255.0 * self.brightness
        strength = float(np.clip(1.0 + self.strength, 0.0, 1.0))
        out = GREY + (out - GREY) * strength
        return np.clip(out.round(), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class SegmentGuide:
    guide: np.ndarray  # (frames, H, W, 3) uint8
    kept: np.ndarray  # (frames,) bool: True = keep this guide frame, False = generate it

    def mask(self) -> np.ndarray:
        """The VACE mask video: black where the guide frame is kept, white where the model generates."""
        values = np.where(self.kept, 0, 255).astype(np.uint8)
        return np.broadcast_to(values[:, None, None, None], self.guide.shape).copy()


def build_segment_guide(
    *,
    frames: int,
    size: tuple[int, int],
    start_image: np.ndarray | None,
    end_image: np.ndarray | None,
    previous_tail: np.ndarray | None,
    fade_out: Fade = Fade(),
    fade_in: Fade = Fade(),
    adjustments: OverlapAdjustments = OverlapAdjustments(),
) -> SegmentGuide:
    """Frames [0, overlap) come from the previous segment's tail (or frame 0 is the start keyframe), the last
    frame is the end keyframe; between them grey, optionally with the keyframes faded in/out."""
    width, height = size
    guide = np.full((frames, height, width, 3), GREY, dtype=np.uint8)
    kept = np.zeros(frames, dtype=bool)
    anchor = None  # the image the gap fades out of
    if previous_tail is not None and len(previous_tail):
        overlap = len(previous_tail)
        if overlap >= frames:
            raise InvalidParams(f"overlap {overlap} must be smaller than the segment's {frames} frames")
        guide[:overlap] = adjustments.apply(previous_tail)
        kept[:overlap] = True
        head, anchor = overlap, previous_tail[-1]
    elif start_image is not None:
        guide[0], kept[0] = start_image, True
        head, anchor = 1, start_image
    else:
        head = 0
    tail = frames
    if end_image is not None:
        guide[-1], kept[-1] = end_image, True
        tail = frames - 1
    gap = max(0, tail - head)
    if anchor is not None:
        for offset, strength in enumerate(fade_out.strengths(gap)):
            guide[head + offset] = _towards_grey(anchor, strength)
    if end_image is not None:
        for offset, strength in enumerate(fade_in.strengths(gap)):
            guide[tail - 1 - offset] = _towards_grey(end_image, strength)
    return SegmentGuide(guide, kept)


def _towards_grey(image: np.ndarray, strength: float) -> np.ndarray:
    return np.clip(GREY + (image.astype(np.float32) - GREY) * strength, 0, 255).round().astype(np.uint8)
