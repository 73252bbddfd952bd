"""wgp.generate_video vs the bare diffusers pipeline call, same pipeline object, same inputs.

Both sides call the engine's loaded pipeline (its speed options included), so the ratio is the cost of the
engine's wrapping alone; benchmarks/worker_overhead.py compares against a plain ``from_pretrained`` pipeline.

Interleaved runs on a small Wan T2V (tiny_t2v_bench: a few seconds per generation on CPU); prints the
median of each and their ratio (target <= 1.02). Both sides end with an mp4 on disk: the bare side with
diffusers' own export_to_video.

    python benchmarks/engine_overhead.py [--runs 5]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import torch
from diffusers.utils import export_to_video

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wgp  # noqa: E402
from source.logging_utils import configure_logging  # noqa: E402

MODEL = "tiny_t2v_bench"


@click.command()
@click.option("--runs", default=5, show_default=True)
def main(runs: int) -> None:
    configure_logging("console")
    settings = wgp.get_default_settings(MODEL)
    state: dict = {"gen": {"file_list": []}}
    wgp.load_models(MODEL, state)
    pipe = wgp.engine_of(state).resident.pipe
    width, height = (int(v) for v in settings["resolution"].split("x"))
    prompt = "a red cat dances on the beach at sunset"
    bare_kwargs = dict(
        prompt=prompt, negative_prompt=settings["negative_prompt"], height=height, width=width,
        num_frames=settings["video_length"], num_inference_steps=settings["num_inference_steps"],
        guidance_scale=settings["guidance_scale"], output_type="np", max_sequence_length=16,
    )

    def bare(out: Path) -> None:
        with torch.inference_mode():
            frames = pipe(generator=torch.Generator("cpu").manual_seed(3), **bare_kwargs).frames[0]
        export_to_video(frames, str(out / "bare.mp4"), fps=16)

    def ours(out: Path) -> None:
        wgp.generate_video(state, MODEL, output_dir=out, prompt=prompt, seed=3)

    with tempfile.TemporaryDirectory() as tmp:
        ours(Path(tmp))  # warm-up: scheduler switch, first-call allocations
        bare(Path(tmp))
        times: dict[str, list[float]] = {"bare": [], "ours": []}
        for _ in range(runs):
            for name, run in (("bare", bare), ("ours", ours)):
                started = time.perf_counter()
                run(Path(tmp))
                times[name].append(time.perf_counter() - started)
    bare_median, ours_median = statistics.median(times["bare"]), statistics.median(times["ours"])
    print(f"model {MODEL}: {settings['resolution']} x {settings['video_length']} frames, "
          f"{settings['num_inference_steps']} steps, CFG {settings['guidance_scale']}")
    print(f"bare diffusers call : median {bare_median:.3f} s  runs={[round(t, 3) for t in times['bare']]}")
    print(f"wgp.generate_video  : median {ours_median:.3f} s  runs={[round(t, 3) for t in times['ours']]}")
    print(f"ratio ours/bare (median): {ours_median / bare_median:.3f} (target <= 1.02)")


if __name__ == "__main__":
    main()
