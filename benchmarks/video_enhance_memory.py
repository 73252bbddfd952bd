"""Peak memory of ``video_enhance`` against the video's length: the handler (interpolation, one frame
inserted per pair, and the tiny Swin2SR x2 upscaler with its colour fix) on a short and a ten times longer
clip at a tiny size, each run in a fresh process; prints each run's peak RSS and their ratio. The handler
streams frames, so the long video should cost about what the short one does.

    python benchmarks/video_enhance_memory.py [--short 100 --long 1000 --size 32] [--no-upscale]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _clip(path: Path, frames: int, size: int) -> Path:
    from source.media.write import write_video_frames

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    write_video_frames((np.roll(base, i, axis=1) for i in range(frames)), path, 16, (size, size))
    return path


def _run_one(frames: int, size: int, upscale: bool) -> None:
    """In the child process: one video_enhance through its handler; prints a JSON line."""
    from source.db.models import Task, TaskStatus
    from source.handlers.context import TaskContext
    from source.handlers.video_enhance import handle_video_enhance
    from source.worker.settings import WorkerSettings

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        clip = _clip(root / "clip.mp4", frames, size)
        params = {"video_url": str(clip), "enable_interpolation": True, "enable_upscale": upscale,
                  "interpolation": {"num_frames": 1, "use_calculated_fps": True},
                  "upscale": {"upscale_factor": 2, "color_fix": True, "model": "tiny_swin2sr_x2"}}
        task = Task(id=f"bench-{frames}", task_type="video_enhance", params_json=json.dumps(params),
                    status=TaskStatus.IN_PROGRESS)
        settings = WorkerSettings(worker_id="bench", main_output_dir=root / "out", input_roots=(root,))
        started = time.perf_counter()
        outcome = handle_video_enhance(TaskContext(task=task, params=params, settings=settings, store=None))
        seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": frames, "output_frames": outcome.result["frames"], "seconds": round(seconds, 2),
                      "peak_rss_mib": round(peak_mib, 1)}))


@click.command()
@click.option("--short", default=100, show_default=True)
@click.option("--long", "long_", default=1000, show_default=True)
@click.option("--size", default=32, show_default=True)
@click.option("--upscale/--no-upscale", default=True, show_default=True,
              help="also upscale (tiny Swin2SR, about 0.5 s a frame on a busy 2-core box)")
@click.option("--child", type=int, default=None, hidden=True)
def main(short: int, long_: int, size: int, upscale: bool, child: int | None) -> None:
    if child is not None:
        _run_one(child, size, upscale)
        return
    runs = {}
    print(f"stages: decode, interpolation{', upscale x2' if upscale else ''}, encode; {size}x{size}", flush=True)
    for frames in (short, long_):
        out = subprocess.run([sys.executable, __file__, "--child", str(frames), "--size", str(size),
                              "--upscale" if upscale else "--no-upscale"],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        runs[frames] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{frames:>6} frames -> {runs[frames]['output_frames']:>6} frames: peak RSS "
              f"{runs[frames]['peak_rss_mib']:8.1f} MiB, {runs[frames]['seconds']:6.2f} s", flush=True)
    ratio = runs[long_]["peak_rss_mib"] / runs[short]["peak_rss_mib"]
    print(f"peak RSS ratio, {long_} / {short} frames: {ratio:.3f} (the input is {long_ / short:g}x longer)")


if __name__ == "__main__":
    main()
