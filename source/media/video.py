"""Frame-level video helpers for orchestrated workflows: read/write frame arrays, cross-fade joins, colour
matching. Arrays are uint8 (frames, height, width, 3) RGB."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from source.errors import InputUnavailable
from source.media.load import load_image, read_frames
from source.media.write import write_video


def read_video(path: str | Path, name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Every frame of a video file (resized to ``size`` = (width, height) when given)."""
    frames = read_frames(Path(path), name)
    if size is not None:
        frames = [frame if frame.size == size else frame.resize(size, Image.BICUBIC) for frame in frames]
    return np.stack([np.asarray(frame, dtype=np.uint8) for frame in frames])


def count_frames(path: str | Path) -> int:
    """Frames that really decode (0 for a file that is not a readable video): container frame counts are
    estimates for many files. The one frame counter."""
    capture = cv2.VideoCapture(str(path))
    try:
        count = 0
        while capture.grab():
            count += 1
        return count
    finally:
        capture.release()


def video_fps(path: str | Path, default: int = 16) -> int:
    """The file's frame rate, rounded (``default`` when the container does not say)."""
    capture = cv2.VideoCapture(str(path))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    return round(fps) if fps and fps > 0 else default


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    size: tuple[int, int]  # (width, height)


def video_info(path: str | Path, name: str) -> VideoInfo:
    """Frame count, rate and size from the container (packets counted when it does not say), no decoding."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputUnavailable(f"params.{name}: {Path(path).name} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 16)
            frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
            return VideoInfo(frames, fps, (stream.codec_context.width, stream.codec_context.height))
    except av.error.FFmpegError as exc:
        raise InputUnavailable(f"params.{name}: {Path(path).name} is not a readable video ({exc})") from None


def iter_video_frames(path: str | Path, name: str) -> Iterator[np.ndarray]:
    """The video's frames one at a time (uint8 RGB), decoded as they are asked for: a long video never sits
    in memory whole."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as exc:
        raise InputUnavailable(f"params.{name}: {Path(path).name} stopped decoding ({exc})") from None


def resample_frames(frames: np.ndarray, fps: float, target_fps: float) -> np.ndarray:
    """The clip at another frame rate by keeping the frame shown at each new instant (as ffmpeg's fps filter
    does): round(n * target / fps) frames."""
    if abs(fps - target_fps) < 1e-3:
        return frames
    count = max(1, round(len(frames) * target_fps / fps))
    return frames[np.minimum((np.arange(count) * fps / target_fps).astype(int), len(frames) - 1)]


def read_image(path: str | Path, name: str, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(load_image(str(path), name, size), dtype=np.uint8)


def save_video(frames: np.ndarray, path: Path, fps: int) -> Path:
    """H.264 mp4 through the engine's writer (which takes floats in [0, 1])."""
    return write_video(frames.astype(np.float32) / 255.0, path, fps)


def crossfade_weights(overlap: int, sharpness: float) -> np.ndarray:
    """Weight of the incoming clip at each of ``overlap`` shared frames, rising from near 0 to near 1.
    ``sharpness`` 0 is a linear fade; larger values hold each side longer and switch faster mid-way."""
    if overlap <= 0:
        return np.zeros(0)
    t = np.arange(1, overlap + 1) / (overlap + 1)
    power = 1.0 + 4.0 * max(0.0, float(sharpness))
    return t**power / (t**power + (1.0 - t) ** power)


def crossfade_join(clips: list[np.ndarray], overlaps: list[int], sharpness: float) -> np.ndarray:
    """Join clips end to end; ``overlaps[i]`` frames at the end of clip i-1 and the start of clip i are the
    same moment and are blended (``overlaps[0]`` is ignored). Length: sum(clips) - sum(overlaps[1:])."""
    if not clips:
        raise ValueError("nothing to join")
    joined = clips[0].astype(np.float32)
    for clip, overlap in zip(clips[1:], overlaps[1:], strict=True):
        clip = clip.astype(np.float32)
        if overlap > min(len(joined), len(clip)):
            raise ValueError(f"overlap {overlap} is longer than a clip ({len(joined)} / {len(clip)} frames)")
        if overlap:
            weights = crossfade_weights(overlap, sharpness)[:, None, None, None]
            blended = (1.0 - weights) * joined[-overlap:] + weights * clip[:overlap]
            joined = np.concatenate([joined[:-overlap], blended, clip[overlap:]])
        else:
            joined = np.concatenate([joined, clip])
    return np.clip(joined.round(), 0, 255).astype(np.uint8)


def colour_match(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Shift the clip's colour statistics (per LAB channel, over the whole clip, so no flicker) to the
    reference image's: mean and spread of lightness and both colour axes."""
    lab = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2LAB) for frame in frames]).astype(np.float32)
    ref = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0) + 1e-6
    ref_mean, ref_std = ref.reshape(-1, 3).mean(0), ref.reshape(-1, 3).std(0) + 1e-6
    matched = np.clip((lab - mean) / std * ref_std + ref_mean, 0, 255).astype(np.uint8)
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_LAB2RGB) for frame in matched])
