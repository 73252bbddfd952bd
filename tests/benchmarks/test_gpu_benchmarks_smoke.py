"""The GPU benchmarks (benchmarks/gpu/) run at ``--size smoke`` on the CPU, so they keep working between GPU runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu import real_size
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def weights_root(tmp_path_factory) -> Path:
    """One smoke build shared by the module (each script builds it if it is missing)."""
    return tmp_path_factory.mktemp("wan-random")


def run_smoke(script: str, root: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu" / f"{script}.py"), "--size", "smoke", "--root", str(root)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    return done.stdout


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
