"""Denoising-step speed of the engine's pipeline vs bare diffusers, and what each speed option costs in output
(issue 8, targets 2 and 3). Random weights at the real Wan sizes (benchmarks/gpu/real_size.py), 832x480x81,
CFG 5.0, same prompt and seed everywhere.

bare: ``WanPipeline.from_pretrained(folder, dtype=bf16).to("cuda")``, diffusers' defaults.
ours: the same folder loaded by the engine (``Engine.load``) from a model definition whose ``engine`` section
names the variant: ``default`` (batched CFG + the fastest exact attention kernel), ``compile`` (+ regional
torch.compile, timed after a warm-up run), and the lossy opt-ins ``fbc`` (first-block cache 0.05) and
``fp8`` (float8 weights). Per step = median of the step-to-step times (a CUDA sync in the step callback, the
first step left out); bare and ours alternate run by run. Output difference vs bare: max abs and PSNR.
Then the VAE: the same latents decoded in bfloat16 and in float32, time and PSNR.

    python benchmarks/gpu/step_speed.py --size 1.3B                       # H100, ~6 min
    python benchmarks/gpu/step_speed.py --size 14B --steps 4 --variants default,compile   # two 14B resident:
                                                                          # use nvidia-h200 (139 GiB)
    python benchmarks/gpu/step_speed.py --size smoke                      # CPU, seconds (keeps it working)
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.gpu import real_size  # noqa: E402
from benchmarks.gpu.common import definitions_dir as temporary_definitions  # noqa: E402
from benchmarks.gpu.common import (  # noqa: E402
    describe_device,
    device,
    free_memory,
    median_step_seconds,
    peak_gib,
    root_option,
    synchronize,
    verdict,
)

PROMPT = "a red cat dances on the beach at sunset, cinematic lighting"
VARIANTS = {
    "default": {},
    "compile": {"compile": True},
    "fbc": {"first_block_cache": 0.05},
    "fp8": {"fp8": True},
}
LOSSLESS = ("default", "compile")
TARGET = 0.75


@dataclass
class Run:
    step_ends: list[float]  # seconds after the call at which each denoising step ended
    frames: np.ndarray

    @property
    def per_step(self) -> float:
        return median_step_seconds(self.step_ends)


def timed_call(pipe, kwargs: dict) -> Run:
    step_ends: list[float] = []

    def on_step_end(pipe, step, timestep, tensors):
        synchronize()
        step_ends.append(time.perf_counter() - started)
        return tensors

    synchronize()
    started = time.perf_counter()
    with torch.inference_mode():
        output = pipe(**kwargs, callback_on_step_end=on_step_end, generator=torch.Generator("cpu").manual_seed(3))
    return Run(step_ends, output.frames[0])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def difference(a: np.ndarray, b: np.ndarray) -> str:
    return f"max abs diff {float(np.abs(a - b).max()):.4f}, PSNR {psnr(a, b):.1f} dB"


def call_kwargs(size: str, steps: int) -> dict:
    settings = real_size.settings_for(size)
    width, height = (int(v) for v in settings["resolution"].split("x"))
    return dict(prompt=PROMPT, negative_prompt=settings["negative_prompt"], height=height, width=width,
                num_frames=settings["video_length"], num_inference_steps=steps,
                guidance_scale=settings["guidance_scale"], output_type="np")


def bare_pipeline(folder: Path, dtype: torch.dtype, text_encoder=None):
    from diffusers import WanPipeline

    extra = {"text_encoder": text_encoder} if text_encoder is not None else {}
    pipe = WanPipeline.from_pretrained(folder, dtype=dtype, **extra).to(device())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def compare_variant(name: str, ours, bare, kwargs: dict, runs: int) -> tuple[float, float, str]:
    if name == "compile":
        timed_call(ours, kwargs)  # warm-up: compilation happens here
    bare_runs, our_runs = [], []
    for _ in range(runs):
        bare_runs.append(timed_call(bare, kwargs))
        our_runs.append(timed_call(ours, kwargs))
    bare_step = statistics.median(r.per_step for r in bare_runs)
    our_step = statistics.median(r.per_step for r in our_runs)
    return bare_step, our_step, difference(our_runs[-1].frames, bare_runs[-1].frames)


def vae_dtypes(bare, kwargs: dict, folder: Path) -> None:
    """The final latents decoded by the VAE in bf16 and in fp32 (the usual 'safe' choice)."""
    from diffusers import AutoencoderKLWan

    with torch.inference_mode():
        latents = bare(**{**kwargs, "output_type": "latent"}, generator=torch.Generator("cpu").manual_seed(3)).frames
    results = {}
    for dtype in (torch.bfloat16, torch.float32):
        vae = AutoencoderKLWan.from_pretrained(folder / "vae", dtype=dtype).to(device())
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents.device, dtype)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents.device, dtype)
        seconds = []
        for _ in range(2):
            synchronize()
            started = time.perf_counter()
            with torch.inference_mode():
                video = vae.decode(latents.to(dtype) * std + mean, return_dict=False)[0]
            synchronize()
            seconds.append(time.perf_counter() - started)
        results[dtype] = (min(seconds), bare.video_processor.postprocess_video(video.float(), output_type="np")[0])
        del vae
    (bf16_s, bf16), (fp32_s, fp32) = results[torch.bfloat16], results[torch.float32]
    print(f"VAE decode: bf16 {bf16_s:.2f} s vs fp32 {fp32_s:.2f} s (ratio {bf16_s / fp32_s:.2f}x); "
          f"bf16 vs fp32 output: {difference(bf16, fp32)}")


@click.command()
@click.option("--size", type=click.Choice(list(real_size.SIZES)), default="1.3B", show_default=True)
@root_option
@click.option("--steps", default=8, show_default=True, help="denoising steps per run (per-step time is the median)")
@click.option("--runs", default=2, show_default=True, help="interleaved bare/ours pairs per variant")
@click.option("--variants", default=",".join(VARIANTS), show_default=True)
def main(size: str, root: Path, steps: int, runs: int, variants: str) -> None:
    from source.engine.core import Engine

    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = set(chosen) - VARIANTS.keys()
    if unknown:
        raise click.BadParameter(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    folder = real_size.build(size, root)
    kwargs = call_kwargs(size, steps)
    print(f"Wan {size} random weights, {kwargs['width']}x{kwargs['height']}x{kwargs['num_frames']}, {steps} steps, "
          f"CFG {kwargs['guidance_scale']}, device {describe_device()}")
    with temporary_definitions() as defaults:
        engine = Engine()
        bare = None
        for name in chosen:
            model_type = f"bench_{name}"
            real_size.write_definition(folder, defaults, model_type, engine=VARIANTS[name])
            engine.load(model_type)
            ours = engine.resident.pipe
            # One text encoder resident for both (it takes no part in a denoising step; 11 GB at real size).
            if bare is None:
                bare = bare_pipeline(folder, real_size.SIZES[size].dtype, text_encoder=ours.text_encoder)
            else:
                bare.register_modules(text_encoder=ours.text_encoder)
                free_memory()
            bare_step, our_step, diff = compare_variant(name, ours, bare, kwargs, runs)
            ratio = our_step / bare_step
            if name not in LOSSLESS:
                judged = "lossy, opt-in"
            elif size == "smoke":
                judged = "smoke size: the target applies to 1.3B and 14B on a GPU"
            else:
                judged = f"target <= {TARGET}x: {verdict(ratio <= TARGET)}"
            print(f"[{name:8s}] per step: bare {bare_step:.3f} s, ours {our_step:.3f} s -> ratio {ratio:.3f}x "
                  f"({judged}); ours vs bare: {diff}")
        if bare is not None:
            vae_dtypes(bare, kwargs, folder)
        peak = peak_gib()
        if peak is not None:
            print(f"peak GPU memory (both pipelines resident): {peak[0]:.1f} GiB allocated")


if __name__ == "__main__":
    main()
