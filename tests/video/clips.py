"""Small test clips: distinct colours per clip, moving noise, optionally a tone as their sound."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from source.media.audio import RATE, mux_audio
from source.media.video import save_video

SIZE = 32


def make_clip(path: Path, frames: int, colour: int, *, fps: int = 16, tone_hz: float | None = None,
              size: int = SIZE, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed + colour)
    video = rng.integers(0, 50, (frames, size, size, 3), dtype=np.uint8)
    video[..., colour % 3] += 170
    video[:, :, : size // 4] = (np.arange(frames) * 255 // max(1, frames - 1)).astype(np.uint8)[:, None, None, None]
    save_video(video, path, fps)
    if tone_hz is not None:
        t = np.arange(round(frames / fps * RATE)) / RATE
        mux_audio(path, np.stack([0.4 * np.sin(2 * np.pi * tone_hz * t)] * 2).astype(np.float32))
    return path


def dominant_hz(samples: np.ndarray) -> float:
    """The strongest frequency of a stretch of (2, n) samples."""
    spectrum = np.abs(np.fft.rfft(samples[0]))
    return float(np.fft.rfftfreq(samples.shape[1], 1 / RATE)[int(np.argmax(spectrum))])
