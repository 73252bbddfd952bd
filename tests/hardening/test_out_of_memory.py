"""Out of memory inside generation (torch.OutOfMemoryError raised in the denoising loop by a step hook this
test installs on the engine): the task fails with a clear message, the model is unloaded and its memory
freed, and the next task loads it again and completes. Tiny real models."""

from __future__ import annotations

import gc
import weakref

import torch

from source.db.models import NewTask, TaskStatus
from source.worker.settings import WorkerSettings
from tests.helpers import generation_queue, in_process_worker

OOM_MARK = "[oom]"


def out_of_memory_on_marked_prompts(params, step: int) -> None:
    """What a CUDA allocation failure looks like from inside the pipeline call."""
    if OOM_MARK in params.prompt:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by a test hook)")


def run_one(store, out, queue) -> None:
    worker = in_process_worker(store, WorkerSettings(worker_id="oom-w", main_output_dir=out), queue, max_tasks=1,
                               exit_when_idle=True)
    assert worker.run() == 0


def test_out_of_memory_fails_the_task_unloads_the_model_and_the_next_task_runs(sqlite_store, tmp_path):
    out = tmp_path / "out"
    queue = generation_queue(out, step_hooks=(out_of_memory_on_marked_prompts,))
    queue.generator.load_model("tiny_t2v")
    pipe = weakref.ref(queue.generator.engine.resident.pipe)
    loads_before = queue.stats.model_loads

    doomed = sqlite_store.add_task(NewTask("t2v", {"prompt": "a huge cat [oom]", "model": "tiny_t2v",
                                                   "resolution": "48x32"}, priority=1))
    following = sqlite_store.add_task(NewTask("t2v", {"prompt": "a small cat", "model": "tiny_t2v", "seed": 5}))

    run_one(sqlite_store, out, queue)
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

    run_one(sqlite_store, out, queue)
    row = sqlite_store.get_task(following)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.output_location.endswith(".mp4") and row.result["seed"] == 5
    assert queue.resident_model == "tiny_t2v"
    assert queue.stats.model_loads == loads_before + 1  # loaded again after the unload
