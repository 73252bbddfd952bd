"""Model persistence: what a resident model saves, through the whole worker on a SQLite queue.

1. Two same-model tasks: model loads and load seconds of the second task (target: zero loads).
2. A mixed queue of 20 tasks alternating two models (inserted A, B, A, B, ...): model switches with
   resident-model claim affinity (the worker's default) vs plain FIFO order (affinity window 0), and
   the wall time of each.

    python benchmarks/model_persistence.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from headless_model_management import HeadlessTaskQueue  # noqa: E402
from headless_wgp import WanOrchestrator  # noqa: E402
from source.db.models import NewTask, TaskStatus  # noqa: E402
from source.db.sqlite import SqliteTaskStore  # noqa: E402
from source.generation.handler import resident_affinity  # noqa: E402
from source.logging_utils import configure_logging  # noqa: E402
from source.worker.loop import Worker  # noqa: E402
from source.worker.settings import WorkerSettings  # noqa: E402

MODELS = ("tiny_t2v", "tiny_flux")


def drain(folder: Path, rows: list[str], **settings) -> tuple[dict, float]:
    """Insert rows (model names), run one worker until idle; queue-stat deltas and wall seconds."""
    store = SqliteTaskStore(folder / f"{time.monotonic_ns()}.db")
    store.migrate()
    ids = [store.add_task(NewTask("t2v" if model != "tiny_flux" else "flux",
                                  {"prompt": "persistence", "model": model, "seed": 1})) for model in rows]
    worker_settings = WorkerSettings(worker_id="bench", main_output_dir=folder / "out", **settings)
    queue = HeadlessTaskQueue(WanOrchestrator(worker_settings.main_output_dir))  # as worker.py builds it
    before = queue.stats.as_dict()
    started = time.perf_counter()
    Worker(store, worker_settings, exit_when_idle=True, generation=queue, affinity=lambda: resident_affinity(queue),
           queue_stats=queue.stats.as_dict).run()
    seconds = time.perf_counter() - started
    after = queue.stats.as_dict()
    failed = [t for t in ids if store.get_task(t).status is not TaskStatus.COMPLETE]
    if failed:
        raise SystemExit(f"{len(failed)} tasks did not complete")
    deltas = {k: after[k] - before[k] for k in ("model_loads", "model_switches")}
    deltas["load_seconds"] = sum(after["load_time_by_model"].values()) - sum(before["load_time_by_model"].values())
    return deltas, seconds


@click.command()
@click.option("--tasks", default=20, show_default=True)
def main(tasks: int) -> None:
    configure_logging("console")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        drain(folder, [MODELS[0]])  # build/cache the tiny weights once, outside the measurement
        drain(folder, [MODELS[1]])
        one, one_seconds = drain(folder, [MODELS[0]])
        two, two_seconds = drain(folder, [MODELS[0]] * 2)
        mixed = [MODELS[i % 2] for i in range(tasks)]
        affinity, affinity_seconds = drain(folder, mixed)
        fifo, fifo_seconds = drain(folder, mixed, affinity_window=0.0)
    print(f"same model: 1 task -> {one['model_loads']} load, {one['load_seconds']:.2f} s loading; "
          f"2 tasks -> {two['model_loads']} load, {two['load_seconds']:.2f} s loading: the second task loaded "
          f"{two['model_loads'] - one['model_loads']} times ({one_seconds:.2f} s vs {two_seconds:.2f} s wall)")
    print(f"mixed {tasks} tasks ({' / '.join(MODELS)} alternating):")
    print(f"  resident-model affinity: {affinity['model_switches']} switches, {affinity['model_loads']} loads, "
          f"{affinity_seconds:.2f} s")
    print(f"  plain FIFO             : {fifo['model_switches']} switches, {fifo['model_loads']} loads, "
          f"{fifo_seconds:.2f} s")
    print(f"ratio FIFO/affinity: switches {fifo['model_switches'] / max(affinity['model_switches'], 1):.1f}x, "
          f"time {fifo_seconds / affinity_seconds:.2f}x")


if __name__ == "__main__":
    main()
