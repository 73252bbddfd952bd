"""A task row through the whole worker vs the bare diffusers pipeline call with the same inputs.

The worker runs in this process on a temporary SQLite queue (the model stays resident after a warm-up
task); each measured "ours" run is insert row -> claim -> conversion -> HeadlessTaskQueue ->
WanOrchestrator -> wgp.generate_video -> mp4 -> row Complete. The bare run is the pipeline call plus
diffusers' export_to_video. Runs are interleaved; prints medians and their ratio (target <= 1.02).

    python benchmarks/worker_overhead.py [--runs 5]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import torch
from diffusers.utils import export_to_video

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wgp  # noqa: E402
from source import generation  # noqa: E402
from source.db.models import NewTask, TaskStatus  # noqa: E402
from source.db.sqlite import SqliteTaskStore  # noqa: E402
from source.logging_utils import configure_logging  # noqa: E402
from source.settings import WorkerSettings  # noqa: E402
from source.worker_loop import Worker  # noqa: E402

MODEL = "tiny_t2v_bench"
PROMPT = "a red cat dances on the beach at sunset"


def wait_complete(store: SqliteTaskStore, task_id: str) -> None:
    """Wait like a client would: wake on a commit to the file (data_version), then read the row."""
    while True:
        row = store.get_task(task_id)
        if row.status is TaskStatus.COMPLETE:
            return
        if row.status is not TaskStatus.QUEUED and row.status is not TaskStatus.IN_PROGRESS:
            raise SystemExit(f"task {task_id} ended {row.status.value}: {row.error_message}")
        store.wait_for_change(1.0)


@click.command()
@click.option("--runs", default=5, show_default=True)
def main(runs: int) -> None:
    configure_logging("console")
    settings = wgp.get_default_settings(MODEL)
    width, height = (int(v) for v in settings["resolution"].split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        store = SqliteTaskStore(out / "tasks.db")
        store.migrate()
        worker = Worker(store, WorkerSettings(worker_id="bench", main_output_dir=out / "outputs"),
                        affinity=generation.resident_affinity)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()

        def ours() -> None:
            wait_complete(store, store.add_task(NewTask("t2v", {"prompt": PROMPT, "model": MODEL, "seed": 3})))

        ours()  # warm-up: loads the model, first-call allocations
        pipe = wgp.engine.resident.pipe
        bare_kwargs = dict(
            prompt=PROMPT, negative_prompt=settings["negative_prompt"], height=height, width=width,
            num_frames=settings["video_length"], num_inference_steps=settings["num_inference_steps"],
            guidance_scale=settings["guidance_scale"], output_type="np", max_sequence_length=16,
        )

        def bare() -> None:
            with torch.inference_mode():
                frames = pipe(generator=torch.Generator("cpu").manual_seed(3), **bare_kwargs).frames[0]
            export_to_video(frames, str(out / "bare.mp4"), fps=16)

        bare()
        times: dict[str, list[float]] = {"bare": [], "ours": []}
        for _ in range(runs):
            for name, run in (("bare", bare), ("ours", ours)):
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
        worker.request_stop()
        thread.join(timeout=30)
        loads = generation.generation_queue(worker.settings).stats.as_dict()["model_loads"]
    bare_median, ours_median = statistics.median(times["bare"]), statistics.median(times["ours"])
    print(f"model {MODEL}: {settings['resolution']} x {settings['video_length']} frames, "
          f"{settings['num_inference_steps']} steps; model loads during the run: {loads} (warm-up only)")
    print(f"bare pipeline + export_to_video : median {bare_median:.3f} s  runs={[round(t, 3) for t in times['bare']]}")
    print(f"row through the worker          : median {ours_median:.3f} s  runs={[round(t, 3) for t in times['ours']]}")
    print(f"ratio worker/bare (median): {ours_median / bare_median:.3f} (target <= 1.02)")


if __name__ == "__main__":
    main()
