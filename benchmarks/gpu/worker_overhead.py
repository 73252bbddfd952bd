"""Worker overhead at real size (issue 8, target 1): a task row through ``worker.py`` on SQLite vs the bare
pipeline call, Wan 1.3B random weights at 832x480x81, first load excluded (a warm-up task), and the model
loads counted in the worker (the warm-up's only, so the next tasks found it resident). The measurement is
benchmarks/worker_overhead.py's, pointed at a definition of the real-size folder.

    python benchmarks/gpu/worker_overhead.py --size 1.3B --runs 3      # H100: ~2 x 30 steps x 1.3 s per run
    python benchmarks/gpu/worker_overhead.py --size smoke --runs 1     # CPU, seconds
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import worker_overhead  # noqa: E402
from benchmarks.gpu import real_size  # noqa: E402
from benchmarks.gpu.common import definitions_dir, root_option  # noqa: E402

TARGET = 1.005


@click.command()
@click.option("--size", type=click.Choice(list(real_size.SIZES)), default="1.3B", show_default=True)
@root_option
@click.option("--runs", default=3, show_default=True)
@click.option("--steps", type=int, default=None, help="denoising steps (default: the model's own, 30)")
def main(size: str, root: Path, runs: int, steps: int | None) -> None:
    folder = real_size.build(size, root)
    settings = real_size.settings_for(size)
    if steps:
        settings["num_inference_steps"] = steps
    # The worker process started by the measurement inherits WGP_DEFAULTS_DIR.
    with definitions_dir() as defaults:
        model_type = real_size.write_definition(folder, defaults, real_size.model_type_for(size), settings=settings)
        worker_overhead.measure(runs, model_type, TARGET)


if __name__ == "__main__":
    main()
