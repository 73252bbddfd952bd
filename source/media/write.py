"""Writing generated frames: H.264 mp4 (yuv420p) encoded in-process by PyAV's libx264, PNG for single images."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from source.media.atomic_files import atomic_file

CRF = 10
# x264's canonical code paths instead of its CPU-dependent assembly (the 4x4/8x8 intra-mode search and the
# mb-tree cost propagation, both approximations that x264 itself documents as not reproducible): with them the
# same frames encoded twice in one worker process, right after a generation, came out different (a few
# macroblocks of one frame, up to 14/255 apart once decoded). Same speed within noise on 832x480.
X264_PARAMS = "cpu-independent=1"


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
    """Streams uint8 RGB frames of ``size`` (width, height) into an mp4, one at a time.

    The same frames always give the same bytes (``X264_PARAMS``). CRF 10 keeps generated detail
    (near-transparent quality). x264's veryfast preset encodes 832x480x81 in less than half the time of its default (medium) at that quality (benchmarks/video_encoding.py), so
    writing never dominates a fast task; encoding in-process also spares a pipe to an ffmpeg process.
    """
    import av

    width, height = size
    with atomic_file(path) as temp, av.open(str(temp), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(CRF), "preset": preset,
                                                                  "x264-params": X264_PARAMS})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())  # flush the encoder's delayed frames
    return path


IMAGE_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


def write_image(frame: np.ndarray, path: Path) -> Path:
    """PNG, JPEG or WebP by ``path``'s suffix; the lossy two at quality 95."""
    return save_picture(Image.fromarray(to_uint8(frame)), path, **({} if path.suffix == ".png" else {"quality": 95}))


def save_picture(image: Image.Image, path: Path, **options: object) -> Path:
    """``image.save`` through ``atomic_file`` (the format from ``path``'s suffix)."""
    with atomic_file(path) as temp:
        image.save(temp, **options)
    return path
