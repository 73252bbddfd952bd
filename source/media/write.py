"""Writing generated frames: H.264 mp4 (yuv420p) encoded in-process by PyAV's libx264, PNG for single images."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from fractions import Fraction
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


def write_video_frames(frames: Iterable[np.ndarray], path: Path, fps: float, size: tuple[int, int], *,
                       preset: str = "veryfast", crf: int = CRF) -> Path:
    """Streams uint8 RGB frames of ``size`` (width, height) into an mp4, one at a time.

    The same frames always give the same bytes (``X264_PARAMS``). CRF 10 keeps generated detail
    (near-transparent quality). x264's veryfast preset encodes 832x480x81 in less than half the time of its default (medium) at that quality (benchmarks/video_encoding.py), so
    writing never dominates a fast task; encoding in-process also spares a pipe to an ffmpeg process.
    """
    import av

    width, height = size
    rate = int(fps) if float(fps).is_integer() else Fraction(fps).limit_denominator(1001)
    with atomic_file(path) as temp, av.open(str(temp), "w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset,
                                                                  "x264-params": X264_PARAMS})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())  # flush the encoder's delayed frames
    return path


IMAGE_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


def write_soundtrack(video: Path, samples: np.ndarray, rate: int, out: Path | None = None) -> Path:
    """``video`` with ``samples`` (float (channels, n), 1 or 2 channels, at ``rate``) as its AAC track, cut
    or padded with silence to the video's length; the video stream is copied, not re-encoded. Written
    through ``atomic_file`` over ``out`` (default: ``video`` itself): the file is whole or absent."""
    import av

    samples = np.asarray(samples, dtype=np.float32)
    samples = np.repeat(samples, 2, axis=0) if samples.shape[0] == 1 else samples[:2]
    out = out or video
    with atomic_file(out) as partial, av.open(str(video)) as source, \
            av.open(str(partial), "w", format="mp4") as target:
        video_in = source.streams.video[0]
        duration = float(video_in.frames / video_in.average_rate) if video_in.frames else float(
            source.duration or 0) / av.time_base
        video_out = target.add_stream_from_template(video_in)
        audio_out = target.add_stream("aac", rate=rate, layout="stereo")
        for packet in source.demux(video_in):
            if packet.dts is None:
                continue
            packet.stream = video_out
            target.mux(packet)
        length = round(duration * rate)
        fitted = np.zeros((2, length), np.float32)
        fitted[:, :min(length, samples.shape[1])] = np.clip(samples[:, :length], -1.0, 1.0)
        size = audio_out.codec_context.frame_size or 1024
        for start in range(0, length, size):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(fitted[:, start:start + size]),
                                               format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            for packet in audio_out.encode(frame):
                target.mux(packet)
        for packet in audio_out.encode(None):
            target.mux(packet)
    return out


def write_image(frame: np.ndarray, path: Path) -> Path:
    """PNG, JPEG or WebP by ``path``'s suffix; the lossy two at quality 95."""
    return save_picture(Image.fromarray(to_uint8(frame)), path, **({} if path.suffix == ".png" else {"quality": 95}))


def save_picture(image: Image.Image, path: Path, **options: object) -> Path:
    """``image.save`` through ``atomic_file`` (the format from ``path``'s suffix)."""
    with atomic_file(path) as temp:
        image.save(temp, **options)
    return path
