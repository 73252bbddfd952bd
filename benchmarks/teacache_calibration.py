"""TeaCache calibration of a Wan model definition, as TeaCache's authors calibrate theirs: one uncached
generation, then a degree-4 polynomial fitted from the relative L1 change of the timestep embedding
between consecutive steps (what the cache sees) to that of the transformer's output (what skipping
costs). The printed list goes into the definition's ``teacache_coefficients`` (highest power first).

    python benchmarks/teacache_calibration.py [--model tiny_t2v] [--steps 30]
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from source.engine.families import family_for  # noqa: E402
from source.engine.loading.pipeline import load_pipeline  # noqa: E402
from source.engine.model_defs import load_model_def  # noqa: E402
from source.engine.speed import denoisers  # noqa: E402


def relative_l1(previous: torch.Tensor, current: torch.Tensor) -> float:
    return ((current - previous).abs().mean() / previous.abs().mean()).item()


@click.command()
@click.option("--model", default="tiny_t2v", show_default=True)
@click.option("--steps", default=30, show_default=True)
@click.option("--seeds", default=3, show_default=True)
def main(model: str, steps: int, seeds: int) -> None:
    definition = load_model_def(model)
    pipe = load_pipeline(definition, family_for(definition.architecture).pipeline_class())
    settings = definition.settings
    width, height = (int(v) for v in settings.get("resolution", "832x480").split("x"))
    embeddings: list[torch.Tensor] = []
    outputs: list[tuple[int, torch.Tensor]] = []
    for index, expert in enumerate(denoisers(pipe)):
        expert.condition_embedder.time_embedder.register_forward_hook(
            lambda _m, _i, out: embeddings.append(out[:1].float().clone()))
        expert.register_forward_hook(
            lambda _m, _i, out, index=index: outputs.append((index, out[0][:1].float().clone())))
    xs, ys = [], []
    for seed in range(seeds):
        embeddings.clear()
        outputs.clear()
        with torch.inference_mode():
            pipe(prompt="a red cat dances on the beach", negative_prompt="blurry", width=width, height=height,
                 num_frames=settings.get("video_length", 5), num_inference_steps=steps, guidance_scale=5.0,
                 generator=torch.Generator().manual_seed(seed), output_type="latent",
                 **dict(definition.pipeline_kwargs))
        # The conditional pass of each step (the unconditional one follows it); pairs within one expert.
        calls = len(outputs) // steps
        e, out = embeddings[::calls], outputs[::calls]
        for i in range(1, steps):
            if out[i][0] == out[i - 1][0]:
                xs.append(relative_l1(e[i - 1], e[i]))
                ys.append(relative_l1(out[i - 1][1], out[i][1]))
    coefficients = np.polyfit(xs, ys, 4)
    print(f"{model}: {len(xs)} step pairs, embedding change {min(xs):.3f}..{max(xs):.3f}, "
          f"output change {min(ys):.3f}..{max(ys):.3f}")
    print("teacache_coefficients:", [float(f"{c:.6g}") for c in coefficients])


if __name__ == "__main__":
    main()
