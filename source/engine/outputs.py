"""Writing generated frames: H.264 mp4 (yuv420p) through imageio-ffmpeg, PNG for single images."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (diffusers' ``output_type="np"``) → uint8."""
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def unique_path(output_dir: Path, stem: str, suffix: str) -> Path:
    """A fresh file name inside ``output_dir``; the stem comes from the engine, never from params."""
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    path = output_dir / f"{stem}_{stamp}_{uuid.uuid4().hex[:8]}{suffix}"
    assert path.resolve().parent == output_dir.resolve()
    return path


def write_video(frames: np.ndarray, path: Path, fps: int, *, preset: str = "veryfast") -> Path:
    frames = to_uint8(frames)
    _, height, width, _ = frames.shape
    return write_video_frames(frames, path, fps, (width, height), preset=preset)


def write_video_frames(frames: Iterable[np.ndarray], path: Path, fps: int, size: tuple[int, int], *,
                       preset: str = "veryfast") -> Path:
    """Streams uint8 RGB frames of ``size`` (width, height) into an mp4, one at a time."""
    import imageio_ffmpeg

    # macro_block_size=1: keep the exact size (imageio would otherwise pad to multiples of 16).
    # x264's veryfast preset: at 832x480x81 it encodes in less than half the time of the default (medium)
    # at the same quality setting (benchmarks/video_encoding.py), so writing never dominates a fast task.
    writer = imageio_ffmpeg.write_frames(
        str(path), size, fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
        quality=8, ffmpeg_log_level="error", output_params=["-preset", preset],
    )
    writer.send(None)
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    return path


def write_image(frame: np.ndarray, path: Path) -> Path:
    Image.fromarray(to_uint8(frame)).save(path)
    return path
