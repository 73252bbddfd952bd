"""A task row through the whole worker vs the bare diffusers pipeline call with the same inputs.

A real ``worker.py`` process runs on a temporary SQLite queue (the model stays resident after a warm-up
task); each measured "ours" run is insert row -> claim -> conversion -> HeadlessTaskQueue ->
WanOrchestrator -> engine -> mp4 -> row Complete, timed by this process as a client would
see it. The bare run is the pipeline call plus diffusers' export_to_video, in this process, while the
idle worker waits. The bare pipeline is loaded with plain ``from_pretrained`` (none of the engine's speed
options), so the ratio also shows what those options win. Runs are interleaved; prints medians and their
ratio (target <= 1.02 on CPU; benchmarks/gpu/worker_overhead.py runs it at real size with target 1.005).

    python benchmarks/worker_overhead.py [--runs 5] [--model tiny_t2v_bench]
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wgp  # noqa: E402
from source.db.models import NewTask, TaskStatus  # noqa: E402
from source.db.sqlite import SqliteTaskStore  # noqa: E402
from source.engine.families import family_for  # noqa: E402
from source.engine.loading.pipeline import torch_dtype, weights_path  # noqa: E402
from source.engine.model_defs import load_model_def  # noqa: E402
from source.logging_utils import configure_logging  # noqa: E402

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


def bare_export(frames, path: Path) -> None:
    """diffusers' export_to_video (imageio + imageio-ffmpeg); where imageio-ffmpeg is missing (the GPU machine:
    its wheel is too large to carry there), the plainest PyAV loop with libx264's defaults."""
    if importlib.util.find_spec("imageio_ffmpeg") is not None:
        from diffusers.utils import export_to_video

        export_to_video(frames, str(path), fps=16)
        return
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray((frame * 255).round().astype("uint8"))))
        container.mux(stream.encode())


def bare_pipeline(model_type: str):
    """The model as a user of plain diffusers loads it: from_pretrained, onto the GPU when there is one."""
    definition = load_model_def(model_type)
    dtype = torch.float32 if definition.weights.tiny else torch_dtype(definition.dtype)
    pipe = family_for(definition.architecture).pipeline_class().from_pretrained(weights_path(definition), dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to("cuda") if torch.cuda.is_available() else pipe


@click.command()
@click.option("--runs", default=5, show_default=True)
@click.option("--model", "model", default="tiny_t2v_bench", show_default=True, help="model type (a defaults/ JSON)")
@click.option("--target", default=1.02, show_default=True, help="the ratio worker/bare to meet")
def main(runs: int, model: str, target: float) -> None:
    measure(runs, model, target)


def measure(runs: int, model: str, target: float) -> None:
    configure_logging("console")
    settings = wgp.get_default_settings(model)
    width, height = (int(v) for v in settings["resolution"].split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        store = SqliteTaskStore(out / "tasks.db")
        store.migrate()
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py"), "--db-file", str(out / "tasks.db"), "--main-output-dir",
             str(out / "outputs"), "--worker", "bench", "--log-format", "json"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        inside: list[float] = []

        def ours() -> None:
            task_id = store.add_task(NewTask("t2v", {"prompt": PROMPT, "model": model, "seed": 3}))
            wait_complete(store, task_id)
            inside.append(store.get_task(task_id).result["generation_seconds"])

        ours()  # warm-up: the worker loads the model, first-call allocations
        pipe = bare_pipeline(model)
        bare_kwargs = dict(
            prompt=PROMPT, negative_prompt=settings["negative_prompt"], height=height, width=width,
            num_frames=settings["video_length"], num_inference_steps=settings["num_inference_steps"],
            guidance_scale=settings["guidance_scale"], output_type="np",
            **load_model_def(model).pipeline_kwargs,
        )

        def bare() -> None:
            with torch.inference_mode():
                frames = pipe(generator=torch.Generator("cpu").manual_seed(3), **bare_kwargs).frames[0]
            bare_export(frames, out / "bare.mp4")

        bare()
        times: dict[str, list[float]] = {"bare": [], "ours": []}
        for _ in range(runs):
            for name, run in (("bare", bare), ("ours", ours)):
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
        stats = store.list_workers(alive_within_seconds=60)[0].stats or {}
        worker.terminate()
        worker.wait(timeout=60)
        loads = stats.get("model_loads")
    bare_median, ours_median = statistics.median(times["bare"]), statistics.median(times["ours"])
    print(f"model {model}: {settings['resolution']} x {settings['video_length']} frames, "
          f"{settings['num_inference_steps']} steps; model loads in the worker: {loads} (the warm-up task only)")
    print(f"bare pipeline + export          : median {bare_median:.3f} s  runs={[round(t, 3) for t in times['bare']]}")
    print(f"row through the worker          : median {ours_median:.3f} s  runs={[round(t, 3) for t in times['ours']]}")
    inside_median = statistics.median(inside[1:])
    print(f"  of which the engine call inside the worker: median {inside_median:.3f} s -> the worker's own "
          f"plumbing (claim, conversion, queue, publish, status writes) adds {ours_median - inside_median:.3f} s, "
          f"ratio {ours_median / inside_median:.3f}")
    paired = statistics.median(o / b for o, b in zip(times["ours"], times["bare"], strict=True))
    print(f"ratio worker/bare (median): {ours_median / bare_median:.3f}; median of the interleaved pairs' "
          f"ratios: {paired:.3f} (target <= {target})")


if __name__ == "__main__":
    main()
