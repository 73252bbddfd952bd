"""Writing a generated video: our mp4 writer (libx264, quality 8, veryfast preset) vs diffusers'
``export_to_video`` (imageio defaults: quality 5, preset medium) and vs our writer on the medium preset,
same frames. Frames are a WanGP-sized clip (832x480, 81 frames) of moving gradients with grain, so the
encoder has real work. Prints seconds, file size and PSNR against the source frames, and the time ratios.

    python benchmarks/video_encoding.py [--runs 3] [--width 832 --height 480 --frames 81]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import imageio.v3 as iio
import numpy as np
from diffusers.utils import export_to_video

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from source.media import write as outputs  # noqa: E402


def clip(width: int, height: int, frames: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, width, dtype=np.float32)[None, None, :, None]
    y = np.linspace(0, 1, height, dtype=np.float32)[None, :, None, None]
    t = np.linspace(0, 1, frames, dtype=np.float32)[:, None, None, None]
    colour = np.array([1.0, 0.6, 0.3], dtype=np.float32)
    moving = 0.5 + 0.4 * np.sin(6 * (x + y) + 4 * t + colour)
    return np.clip(moving + rng.normal(0, 0.03, moving.shape).astype(np.float32), 0, 1)


def psnr(path: Path, reference: np.ndarray) -> float:
    decoded = iio.imread(path, plugin="pyav").astype(np.float64)
    return 10 * np.log10(255.0**2 / np.mean((decoded - outputs.to_uint8(reference).astype(np.float64)) ** 2))


@click.command()
@click.option("--runs", default=3, show_default=True)
@click.option("--width", default=832, show_default=True)
@click.option("--height", default=480, show_default=True)
@click.option("--frames", default=81, show_default=True)
def main(runs: int, width: int, height: int, frames: int) -> None:
    video = clip(width, height, frames)
    as_list = list(video)

    writers = {
        "ours (veryfast)": lambda path: outputs.write_video(video, path, 16),
        "ours on preset medium": lambda path: outputs.write_video(video, path, 16, preset="medium"),
        "diffusers export_to_video": lambda path: export_to_video(as_list, str(path), fps=16),
    }
    times: dict[str, list[float]] = {name: [] for name in writers}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for run in range(runs):
            for index, (name, write) in enumerate(writers.items()):
                paths[name] = Path(tmp) / f"{index}_{run}.mp4"
                started = time.perf_counter()
                write(paths[name])
                times[name].append(time.perf_counter() - started)
        print(f"{width}x{height}, {frames} frames, {runs} interleaved runs")
        for name, path in paths.items():
            print(f"{name:27s}: median {statistics.median(times[name]):.2f} s, {path.stat().st_size / 1e6:.1f} MB, "
                  f"PSNR {psnr(path, video):.1f} dB")
    ours = statistics.median(times["ours (veryfast)"])
    print(f"ratio ours/export_to_video: {ours / statistics.median(times['diffusers export_to_video']):.2f}; "
          f"ratio veryfast/medium: {ours / statistics.median(times['ours on preset medium']):.2f}")


if __name__ == "__main__":
    main()
