"""Out of memory inside generation (torch.OutOfMemoryError raised in the denoising loop by the test hook
WGP_TEST_OOM_PROMPT): the task fails with a clear message, the model is unloaded and its memory freed,
and the next task loads it again and completes. Tiny real models."""

from __future__ import annotations

import gc
import weakref

import wgp
from source import generation
from source.db.models import NewTask, TaskStatus
from source.engine.fault_injection import OOM_PROMPT_ENV
from source.settings import WorkerSettings
from source.worker_loop import Worker


def run_one(store, out) -> None:
    worker = Worker(store, WorkerSettings(worker_id="oom-w", main_output_dir=out), max_tasks=1, exit_when_idle=True,
                    affinity=generation.resident_affinity, queue_stats=generation.queue_stats)
    assert worker.run() == 0


def test_out_of_memory_fails_the_task_unloads_the_model_and_the_next_task_runs(sqlite_store, tmp_path, monkeypatch):
    monkeypatch.setenv(OOM_PROMPT_ENV, "[oom]")
    out = tmp_path / "out"
    queue = generation.generation_queue(WorkerSettings(main_output_dir=out))
    queue.generator.load_model("tiny_t2v")
    pipe = weakref.ref(wgp.engine.resident.pipe)
    loads_before = queue.stats.model_loads

    doomed = sqlite_store.add_task(NewTask("t2v", {"prompt": "a huge cat [oom]", "model": "tiny_t2v",
                                                   "resolution": "48x32"}, priority=1))
    following = sqlite_store.add_task(NewTask("t2v", {"prompt": "a small cat", "model": "tiny_t2v", "seed": 5}))

    run_one(sqlite_store, out)
    row = sqlite_store.get_task(doomed)
    assert row.status is TaskStatus.FAILED
    assert row.error_message.startswith(
        "out of memory while generating with model 'tiny_t2v' (resolution 48x32); the model was unloaded"
    ), row.error_message
    assert "OutOfMemoryError: CUDA out of memory" in row.error_message
    assert "traceback" not in (row.result or {})  # a known failure, not a crash report
    # unloaded, and nothing (not even the exception's traceback) keeps the pipeline alive
    assert queue.resident_model is None
    gc.collect()
    assert pipe() is None, gc.get_referrers(pipe())

    run_one(sqlite_store, out)
    row = sqlite_store.get_task(following)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.output_location.endswith(".mp4") and row.result["seed"] == 5
    assert queue.resident_model == "tiny_t2v"
    assert queue.stats.model_loads == loads_before + 1  # loaded again after the unload
