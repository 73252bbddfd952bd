"""The step caches (``skip_steps_cache_type`` ``"mag"`` and ``"tea"``) per setting: transformer passes
skipped, seconds, and how far the output moves from the same generation without a cache.

Each setting generates the same prompt and seed (best time of ``--runs``) through WanOrchestrator.generate (the row's path from the
edge on); the difference is the mean absolute difference of the decoded frames (0..255) from the no-cache
run. Tiny model on CPU by default; ``--model`` names a real definition on a GPU box.

    python benchmarks/step_cache.py [--model tiny_t2v_bench] [--steps 16] [--runs 2] [--types mag,tea]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from headless_wgp import WanOrchestrator  # noqa: E402
from source.logging_utils import configure_logging  # noqa: E402

SETTINGS = [(1.5, 0), (2.0, 0), (2.5, 0), (3.0, 0), (2.0, 20), (2.0, 50)]


def frames_of(path: Path) -> np.ndarray:
    capture, frames = cv2.VideoCapture(str(path)), []
    while (read := capture.read())[0]:
        frames.append(read[1])
    capture.release()
    return np.stack(frames).astype(np.float32)


@click.command()
@click.option("--model", default="tiny_t2v_bench", show_default=True)
@click.option("--steps", default=16, show_default=True)
@click.option("--runs", default=2, show_default=True)
@click.option("--types", default="mag,tea", show_default=True, help="cache types, comma-separated")
def main(model: str, steps: int, runs: int, types: str) -> None:
    configure_logging("console")
    with tempfile.TemporaryDirectory() as tmp:
        orchestrator = WanOrchestrator(Path(tmp))
        prompt = "a red cat dances on the beach at sunset"
        orchestrator.generate(model, prompt, seed=3, num_inference_steps=steps)  # warm-up: load, first-call costs
        reference = None
        print(f"{model}, {steps} steps")
        print(f"{'cache':>5} {'multiplier':>10} {'start%':>6} {'passes':>6} {'skipped':>7} {'fraction':>8} "
              f"{'seconds':>8} {'speed-up':>8} {'diff vs none':>12}")
        base_seconds = None
        settings = [("", None, 0)] + [(kind, m, s) for kind in types.split(",") for m, s in SETTINGS]
        for kind, multiplier, start in settings:
            extra = {} if not kind else {"skip_steps_cache_type": kind, "skip_steps_multiplier": multiplier,
                                         "skip_steps_start_step_perc": start}
            # Best of --runs: the machine is shared, the fastest run is the least disturbed one.
            result = min((orchestrator.generate(model, prompt, seed=3, num_inference_steps=steps, **extra)
                          for _ in range(runs)), key=lambda r: r.seconds)
            frames = frames_of(result.paths[0])
            report = result.applied.get("step_cache", {})
            if reference is None:
                reference, base_seconds = frames, result.seconds
            print(f"{kind or 'none':>5} {multiplier or '-':>10} {start:>6} {report.get('transformer_passes', '-'):>6} "
                  f"{report.get('passes_skipped', 0):>7} {report.get('fraction_skipped', 0.0):>8.3f} "
                  f"{result.seconds:>8.2f} {base_seconds / result.seconds:>8.2f} "
                  f"{np.abs(frames - reference).mean():>12.3f}")


if __name__ == "__main__":
    main()
