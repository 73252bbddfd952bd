"""The GPU benchmarks (benchmarks/gpu/) run at ``--size smoke`` on the CPU, so they keep working between GPU runs."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from benchmarks.gpu import real_size

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def weights_root(tmp_path_factory) -> Path:
    """One smoke build shared by the module (each script builds it if it is missing)."""
    return tmp_path_factory.mktemp("wan-random")


def run_smoke(script: str, root: Path, *extra: str) -> str:
    """The script's click command in this process (the imports are paid once for the module)."""
    from click.testing import CliRunner

    command = importlib.import_module(f"benchmarks.gpu.{script}").main
    result = CliRunner().invoke(command, ["--size", "smoke", "--root", str(root), *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output[-4000:]
    return result.stdout


def parameters(size: str, component: str) -> int:
    with real_size.building_on("meta", torch.bfloat16):
        module = real_size.component_builders(size)[component]()
    return sum(p.numel() for p in module.parameters())


def test_smoke_build_loads_through_from_pretrained_as_the_smoke_size(weights_root: Path):
    from diffusers import WanPipeline

    out = run_smoke("real_size", weights_root)

    folder = real_size.folder_for("smoke", weights_root)
    assert f"built smoke: {folder}" in out
    pipe = WanPipeline.from_pretrained(folder)
    config = pipe.transformer.config
    for key, value in real_size.SIZES["smoke"].transformer.items():
        assert config[key] == (list(value) if isinstance(value, tuple) else value), key
    # The text encoder is stored once per root and hard-linked into each model's folder.
    weights = next((folder / "text_encoder").glob("*.safetensors"))
    assert weights.stat().st_nlink == 2


def test_real_sizes_have_the_published_parameter_counts():
    assert 1.2e9 <= parameters("1.3B", "transformer") <= 1.5e9
    assert 13e9 <= parameters("14B", "transformer") <= 15e9
    assert 5.5e9 <= parameters("14B", "text_encoder") <= 6e9  # UMT5-XXL encoder


def test_loading_benchmark_prints_load_rates_ratios_and_switches(weights_root: Path):
    out = run_smoke("loading", weights_root)

    for label in ("load ours (Engine.load)", "load bare (from_pretrained + .to(device))", "ratio ours/bare small",
                  "ratio ours/bare large", "switch small -> large", "switch large -> small", "GB/s",
                  "page cache: warm"):
        assert label in out, label


def test_low_vram_benchmark_runs_both_profiles_and_prints_the_targets(weights_root: Path):
    out = run_smoke("low_vram", weights_root)

    for label in ("profile 1 (all resident): load", "profile 4 (group offload + VAE tiling): load",
                  "denoising", "per step (median of steps 2..)", "ratio offload/resident (generation):", "ratio offload/resident (per denoising step):",
                  "(target <= 1.4x)", "peak GPU memory with offload: n/a (no CUDA) (target <= 16 GiB)",
                  "max abs difference offload vs resident, transformer outputs",
                  "max abs difference offload vs resident, decoded mp4 frames", "transformer outputs finite: yes"):
        assert label in out, label


def test_step_speed_benchmark_times_every_variant_and_compares_outputs(weights_root: Path):
    out = run_smoke("step_speed", weights_root, "--steps", "3", "--runs", "1", "--variants", "default,fbc,fp8")

    lines = {line.split("]")[0].strip("[ "): line for line in out.splitlines() if line.startswith("[")}
    assert set(lines) == {"default", "fbc", "fp8"}
    assert "per step: bare" in lines["default"] and "ratio" in lines["default"]
    assert "lossy, opt-in" in lines["fp8"] and "lossy, opt-in" in lines["fbc"]
    # Batched guidance is lossless: the default variant matches bare diffusers; fp8 does not, and says so.
    default_diff = float(lines["default"].split("max abs diff ")[1].split(",")[0])
    fp8_diff = float(lines["fp8"].split("max abs diff ")[1].split(",")[0])
    assert default_diff < 1e-3 < fp8_diff
    assert "VAE decode: bf16" in out and "bf16 vs fp32 output: max abs diff" in out


def test_gpu_worker_overhead_runs_a_row_through_the_worker_on_the_built_folder(weights_root: Path):
    out = run_smoke("worker_overhead", weights_root, "--runs", "1")

    assert "model random_t2v_smoke" in out
    assert "model loads in the worker: 1 (the warm-up task only)" in out
    assert "ratio worker/bare (median)" in out and "(target <= 1.005)" in out
