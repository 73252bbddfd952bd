"""The real 1.3B Wan 2.1 T2V size on this CPU: a row through a real ``worker.py`` vs the bare diffusers call.

The random-weight folder of the released shapes (bf16, UMT5-XXL included; benchmarks/gpu/real_size.py) is
built once under ``--root``. Then, in one run, each measurement in a process of its own so that its peak RSS
is its own (``os.wait4``'s ``ru_maxrss``):

- plain read: every file of the folder read sequentially once (the page cache is warmed first, so every
  load below reads warm too, and this is the floor a loader can reach);
- bare: ``WanPipeline.from_pretrained(folder, dtype=bf16)``, the call, ``export_to_video``;
- row: a ``t2v`` row queued on a fresh SQLite file (after a warm-up row on the smoke model that makes the
  worker import the engine), ``worker.py --once`` claims and completes it; its time
  is claim -> Complete (``generation_started_at`` -> ``generation_processed_at``), its load time and the dtype
  of every component as loaded come from the worker's ``model_loaded`` log line.

Prints the ratios against the targets of issue 33: row/bare wall <= 1.02, our load <= 1.0x bare and
<= 1.5x the plain read, peak RSS <= 1.05x bare.

    python benchmarks/real_size_cpu.py                      # 1.3B: ~14 GB on disk under /tmp/wan-random
    python benchmarks/real_size_cpu.py --size smoke         # the CPU-sized model: seconds (a dry run)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gpu import real_size  # noqa: E402
from benchmarks.gpu.common import definitions_dir, page_cache, root_option, weight_bytes  # noqa: E402

MODEL_TYPE = "bench_real_size_cpu"
WARMUP_MODEL_TYPE = "bench_real_size_cpu_warmup"
PROMPT = "a red cat dances on the beach at sunset"
SEED = 3
TARGETS = {"wall": 1.02, "load_vs_bare": 1.0, "load_vs_read": 1.5, "rss": 1.05}


def small_settings(guidance: float) -> dict[str, Any]:
    return {"resolution": "64x64", "video_length": 5, "num_inference_steps": 2, "guidance_scale": guidance}


def run_measured(command: list[str], **popen: Any) -> tuple[int, float, str]:
    """Run ``command``; its exit status, its peak RSS in GiB (``ru_maxrss``, KiB on Linux) and its stdout."""
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, **popen)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return process.returncode, usage.ru_maxrss / 2**20, out.read()


def plain_read_seconds(folder: Path) -> float:
    started = time.perf_counter()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with path.open("rb") as f:
                while f.read(1 << 24):
                    pass
    return time.perf_counter() - started


def bare_child(folder: Path, settings: dict[str, Any], out_dir: Path, size: str) -> None:
    """What a user of plain diffusers writes; prints its own timings and dtypes as one JSON line."""
    import torch
    from diffusers import WanPipeline
    from diffusers.utils import export_to_video

    from source.engine.core import component_dtypes

    started = time.perf_counter()
    pipe = WanPipeline.from_pretrained(folder, dtype=real_size.SIZES[size].dtype)
    pipe.set_progress_bar_config(disable=True)
    loaded = time.perf_counter()
    width, height = (int(v) for v in settings["resolution"].split("x"))
    with torch.inference_mode():
        frames = pipe(prompt=PROMPT, height=height, width=width, num_frames=settings["video_length"],
                      num_inference_steps=settings["num_inference_steps"], guidance_scale=settings["guidance_scale"],
                      generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").frames[0]
    export_to_video(frames, str(out_dir / "bare.mp4"), fps=16)
    print(json.dumps({"load": loaded - started, "total": time.perf_counter() - started,
                      "dtypes": component_dtypes(pipe)}))


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def row_through_worker(work: Path) -> dict[str, Any]:
    from source.db.models import NewTask, TaskStatus
    from source.db.sqlite import SqliteTaskStore

    db = work / "tasks.db"
    store = SqliteTaskStore(db)
    store.migrate()
    # A warm-up row on the smoke model first: the worker imports the engine (torch, diffusers) on its first
    # generation row, a one-off per process that the bare child also pays before its clock starts.
    store.add_task(NewTask("t2v", {"prompt": PROMPT, "model": WARMUP_MODEL_TYPE, "seed": SEED}, priority=10))
    task_id = store.add_task(NewTask("t2v", {"prompt": PROMPT, "model": MODEL_TYPE, "seed": SEED}))
    status, rss, output = run_measured(
        [sys.executable, "worker.py", "--db-file", str(db), "--main-output-dir", str(work / "outputs"), "--once",
         "--worker", "bench-real-size", "--log-format", "json"])
    row = store.get_task(task_id)
    store.close()
    if status != 0 or row.status is not TaskStatus.COMPLETE:
        raise SystemExit(f"the row ended {row.status.value} (worker exit {status}): {row.error_message}\n{output[-3000:]}")
    events = (json.loads(line) for line in output.splitlines() if line.startswith("{"))
    loaded = next(e for e in events if e.get("event") == "model_loaded" and e.get("model_type") == MODEL_TYPE)
    return {"total": _seconds_between(row.generation_started_at, row.generation_processed_at),
            "load": loaded["seconds"], "dtypes": loaded["dtypes"], "rss": rss}


def ratio_line(name: str, value: float, target: float) -> str:
    return f"  {name:<46}: {value:.3f}x (target <= {target}) {'PASS' if value <= target else 'FAIL'}"


@click.command()
@click.option("--size", type=click.Choice(["1.3B", "smoke"]), default="1.3B", show_default=True)
@root_option
@click.option("--guidance", default=1.0, show_default=True,
              help="guidance_scale for both paths (1.0: no CFG, the text encoder runs once)")
@click.option("--child", type=click.Choice(["bare"]), hidden=True)
@click.option("--folder", type=click.Path(path_type=Path), hidden=True)
@click.option("--out-dir", type=click.Path(path_type=Path), hidden=True)
def main(size: str, root: Path, guidance: float, child: str | None, folder: Path | None, out_dir: Path | None) -> None:
    settings = small_settings(guidance)
    if child == "bare":
        bare_child(folder, settings, out_dir, size)
        return
    folder = real_size.build(size, root)
    dtype = str(real_size.SIZES[size].dtype).removeprefix("torch.")
    print(f"{size} random-weight folder: {folder} ({weight_bytes(folder) / 1e9:.3g} GB of safetensors, {dtype}); "
          f"generation {settings}")
    page_cache(folder, want_cold=False)
    read = plain_read_seconds(folder)
    with definitions_dir() as defaults, tempfile.TemporaryDirectory(prefix="real-size-cpu-") as tmp:
        real_size.write_definition(folder, defaults, MODEL_TYPE, settings=settings)
        real_size.smoke_definition(root, defaults, WARMUP_MODEL_TYPE)
        work = Path(tmp)
        status, bare_rss, output = run_measured(
            [sys.executable, __file__, "--child", "bare", "--folder", str(folder), "--out-dir", str(work),
             "--guidance", str(guidance), "--size", size])
        if status != 0:
            raise SystemExit(f"the bare run failed ({status}):\n{output[-3000:]}")
        bare = json.loads(output.strip().splitlines()[-1])
        ours = row_through_worker(work)
    print(f"plain sequential read (warm page cache)      : {read:.2f} s")
    print(f"bare from_pretrained + call + export        : {bare['total']:.2f} s (load {bare['load']:.2f} s), "
          f"peak RSS {bare_rss:.2f} GiB")
    print(f"row through worker.py, claim -> Complete     : {ours['total']:.2f} s (load {ours['load']:.2f} s), "
          f"peak RSS {ours['rss']:.2f} GiB (the whole worker process)")
    print(f"dtypes as loaded, bare: {bare['dtypes']}")
    print(f"dtypes as loaded, ours: {ours['dtypes']}")
    print("ratios:")
    print(ratio_line("wall time, row / bare", ours["total"] / bare["total"], TARGETS["wall"]))
    print(ratio_line("load, ours / bare from_pretrained", ours["load"] / bare["load"], TARGETS["load_vs_bare"]))
    print(ratio_line("load, ours / plain read", ours["load"] / read, TARGETS["load_vs_read"]))
    print(f"  {'load, bare / plain read':<46}: {bare['load'] / read:.3f}x")
    print(ratio_line("peak RSS, worker process / bare process", ours["rss"] / bare_rss, TARGETS["rss"]))
    mismatched = {name for name in bare["dtypes"] if ours["dtypes"].get(name) != bare["dtypes"][name]}
    print(f"  components loaded in another dtype than bare: {sorted(mismatched) or 'none'}")


if __name__ == "__main__":
    main()
