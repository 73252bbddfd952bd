"""Sound beside the frames (PyAV): a file's audio as samples, a track assembled from timed pieces of sources
(what a stitched video keeps of each clip), and that track muxed into an mp4 whose video is copied as it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from source.errors import InputUnavailable
from source.media.write import write_soundtrack

RATE = 48000
LAYOUT = "stereo"
CHANNELS = 2


@dataclass(frozen=True)
class AudioPiece:
    """``duration`` seconds of ``source``'s audio from ``start`` (None: silence, e.g. generated frames)."""

    source: Path | None
    start: float
    duration: float


def has_audio(path: str | Path) -> bool:
    import av

    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except (av.error.FFmpegError, OSError):
        return False


def read_audio(path: str | Path, name: str = "audio") -> np.ndarray:
    """Every sample of the file's first audio stream, float32 (2, n) at RATE; InputUnavailable when the file
    has no audio that decodes."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputUnavailable(f"params.{name}: {Path(path).name} has no audio stream")
            resampler = av.AudioResampler(format="fltp", layout=LAYOUT, rate=RATE)
            chunks = []
            for frame in container.decode(container.streams.audio[0]):
                chunks += [out.to_ndarray() for out in resampler.resample(frame)]
            chunks += [out.to_ndarray() for out in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        raise InputUnavailable(f"params.{name}: {Path(path).name}: its audio does not decode ({exc})") from None
    if not chunks:
        return np.zeros((CHANNELS, 0), np.float32)
    return np.concatenate(chunks, axis=1).astype(np.float32)


def assemble(pieces: Sequence[AudioPiece]) -> np.ndarray:
    """The pieces one after another; where a source is silent or shorter than asked, silence (so the track
    stays in step with the frames)."""
    decoded: dict[Path, np.ndarray] = {}
    parts = []
    for piece in pieces:
        want = max(0, round(piece.duration * RATE))
        samples = np.zeros((CHANNELS, want), np.float32)
        if piece.source is not None and want:
            if piece.source not in decoded:
                decoded[piece.source] = read_audio(piece.source) if has_audio(piece.source) else np.zeros((CHANNELS, 0), np.float32)
            start = max(0, round(piece.start * RATE))
            taken = decoded[piece.source][:, start:start + want]
            samples[:, :taken.shape[1]] = taken
        parts.append(samples)
    return np.concatenate(parts, axis=1) if parts else np.zeros((CHANNELS, 0), np.float32)


def mux_audio(video: Path, samples: np.ndarray, out: Path | None = None) -> Path:
    """``video`` with ``samples`` (float32 (2, n) at RATE) as its sound (engine/outputs.write_soundtrack)."""
    return write_soundtrack(video, samples, RATE, out)


def spans_to_pieces(spans: Sequence[tuple[Path | None, int, int]], fps: float) -> list[AudioPiece]:
    """(source clip or None, its first frame, frame count) per stretch of a stitched video → the audio of the
    same stretches."""
    return [AudioPiece(source, first / fps, count / fps) for source, first, count in spans]


def add_soundtrack(video: Path, *, audio_file: Path | None = None,
                   pieces: Sequence[AudioPiece] = ()) -> str | None:
    """Give ``video`` sound: ``audio_file`` from its start when given, else the pieces when any of their
    sources has audio. Returns what was used ("audio_url", "clips") or None (left silent)."""
    if audio_file is not None:
        mux_audio(video, read_audio(audio_file, "audio_url"))
        return "audio_url"
    if any(piece.source is not None and has_audio(piece.source) for piece in pieces):
        mux_audio(video, assemble(pieces))
        return "clips"
    return None
