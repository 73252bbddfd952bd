"""Worker overhead at real size (issue 8, target 1): a task row through ``worker.py`` on SQLite vs the bare
pipeline call, Wan 1.3B random weights at 832x480x81, first load excluded (a warm-up task), and the model
loads counted in the worker (the warm-up's only, so the next tasks found it resident). The measurement is
benchmarks/worker_overhead.py's, pointed at a definition of the real-size folder.

    python benchmarks/gpu/worker_overhead.py --size 1.3B --runs 3      # H100: ~2 x 30 steps x 1.3 s per run
    python benchmarks/gpu/worker_overhead.py --size smoke --runs 1     # CPU, seconds
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import worker_overhead  # noqa: E402
from benchmarks.gpu import real_size  # noqa: E402

TARGET = 1.005


@click.command()
@click.option("--size", type=click.Choice(list(real_size.SIZES)), default="1.3B", show_default=True)
@click.option("--root", type=click.Path(path_type=Path), default=Path("/tmp/wan-random"), show_default=True)
@click.option("--runs", default=3, show_default=True)
@click.option("--steps", type=int, default=None, help="denoising steps (default: the model's own, 30)")
def main(size: str, root: Path, runs: int, steps: int | None) -> None:
    folder = real_size.build(size, root)
    settings = real_size.settings_for(size)
    if steps:
        settings["num_inference_steps"] = steps
    with tempfile.TemporaryDirectory() as defaults:
        # The worker process is started by the measurement and inherits this variable.
        os.environ["WGP_DEFAULTS_DIR"] = defaults
        model_type = f"wan_{size}_random".replace(".", "_")
        real_size.write_definition(folder, Path(defaults), model_type, settings=settings)
        worker_overhead.measure(runs, model_type, TARGET)


if __name__ == "__main__":
    main()
