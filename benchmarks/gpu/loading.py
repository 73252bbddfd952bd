"""Local safetensors -> GPU: the engine's load vs bare diffusers, and model switches (issue 8, target 5).

For the random-weight Wan 2.1 T2V 1.3B and 14B (benchmarks/gpu/real_size.py, built on first use): seconds,
GB of weights (safetensors bytes) and GB/s for ``Engine.load`` and for ``WanPipeline.from_pretrained(folder,
dtype=bf16).to("cuda")``, and their ratio; then switches 1.3B -> 14B -> 1.3B through ``Engine.load`` (which
unloads the resident model first). Before each load the OS page cache is dropped when this process may
(root), else every file is read once so all loads start warm; each line says which.

    python benchmarks/gpu/real_size.py --size 1.3B --size 14B --root /tmp/wan-random   # once, ~43 GB on disk
    python benchmarks/gpu/loading.py --root /tmp/wan-random
    python benchmarks/gpu/loading.py --size smoke --root /tmp/wan-random             # CPU, seconds
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.gpu import common, real_size  # noqa: E402
from source.engine.core import Engine  # noqa: E402
from source.logging_utils import configure_logging  # noqa: E402

# "small" and "large" are the two models a switch goes between; smoke uses the CPU-sized one for both.
ROLES = {"real": {"small": "1.3B", "large": "14B"}, "smoke": {"small": "smoke", "large": "smoke"}}


def bare_load(folder: Path, dtype: torch.dtype, device: torch.device):
    from diffusers import WanPipeline

    return WanPipeline.from_pretrained(folder, dtype=dtype).to(device)


def rate(size_bytes: int, seconds: float) -> str:
    return f"{seconds:.3f} s, {size_bytes / 1e9 / seconds:.3g} GB/s"


@click.command()
@click.option("--size", type=click.Choice(list(ROLES)), default="real", show_default=True,
              help="real: 1.3B and 14B (GPU); smoke: the CPU-sized model in both roles.")
@common.root_option
@click.option("--page-cache", type=click.Choice(["cold", "warm"]), default=None,
              help="cold: drop the page cache before each load (needs root, else warm). Default: cold; smoke: warm.")
def main(size: str, root: Path, page_cache: str | None) -> None:
    configure_logging("console")
    roles = ROLES[size]
    want_cold = (page_cache or ("warm" if size == "smoke" else "cold")) == "cold"
    device = common.device()
    engine = Engine()
    print(f"device: {common.describe_device()}")
    with common.definitions_dir() as defaults:
        folders = {role: real_size.build(roles[role], root) for role in roles}
        types = {role: real_size.write_definition(folders[role], defaults, f"bench_load_{role}") for role in roles}
        # Imports, the CUDA context and first allocations are start-up costs, not loading: both paths pay
        # them here, untimed, on the smoke model.
        engine.load(real_size.smoke_definition(root, defaults))
        engine.unload()
        bare_load(real_size.folder_for("smoke", root), real_size.SIZES["smoke"].dtype, device)
        common.free_memory()

        for role, model_size in roles.items():
            folder, label = folders[role], f"{role} ({model_size})"
            size_bytes = common.weight_bytes(folder)
            print(f"{label}: {size_bytes / 1e9:.3g} GB of weights (safetensors) in {folder}")

            state = common.page_cache(folder, want_cold)
            _, ours = common.timed(lambda role=role: engine.load(types[role]))
            placed = engine.resident.pipe.transformer.device
            engine.unload()
            print(f"  load ours (Engine.load)                   : {rate(size_bytes, ours)} "
                  f"(page cache: {state}; transformer on {placed})")

            state = common.page_cache(folder, want_cold)
            dtype = real_size.SIZES[model_size].dtype
            pipe, bare = common.timed(lambda folder=folder, dtype=dtype: bare_load(folder, dtype, device))
            del pipe
            common.free_memory()
            print(f"  load bare (from_pretrained + .to(device)) : {rate(size_bytes, bare)} (page cache: {state})")
            print(f"  ratio ours/bare {label}: {ours / bare:.2f}x")

        engine.load(types["small"])
        for source, target in (("small", "large"), ("large", "small")):
            state = common.page_cache(folders[target], want_cold)
            _, seconds = common.timed(lambda target=target: engine.load(types[target]))
            print(f"switch {source} -> {target} ({roles[source]} -> {roles[target]}) through Engine.load: "
                  f"{rate(common.weight_bytes(folders[target]), seconds)} of {target}'s weights (page cache: {state})")
        engine.unload()


if __name__ == "__main__":
    main()
