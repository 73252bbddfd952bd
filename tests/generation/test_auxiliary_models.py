"""The auxiliary models a row loads (depth and pose for VACE control videos) stay beside the resident model
while memory allows, are freed by the same owner when another model loads and memory is short, and are
listed by ``tasks workers``."""

from __future__ import annotations

import pytest

from headless_model_management import HeadlessTaskQueue
from headless_wgp import WanOrchestrator
from source.db.models import NewTask, TaskStatus
from source.model_memory import ModelMemory
from tests.foundation.test_cli import tasks_cli
from tests.generation.test_generation_tasks import run_worker_in_process
from tests.generation.test_video_prompt_type import media, vace_row  # noqa: F401  (module fixture)


def _run(store, tmp_path, memory: ModelMemory, rows):
    out = tmp_path / "out"
    ids = [store.add_task(row) for row in rows]
    run_worker_in_process(store, out, HeadlessTaskQueue(WanOrchestrator(out.resolve(), memory=memory)))
    for task_id in ids:
        row = store.get_task(task_id)
        assert row.status is TaskStatus.COMPLETE, row.error_message
    return tasks_cli(store.path, "workers").stdout


def _other_model():
    return NewTask("t2v", {"model": "tiny_t2v", "prompt": "a cat", "seed": 1})


@pytest.mark.slow
def test_a_depth_row_then_another_model_leaves_no_auxiliary_model_when_memory_is_short(
        sqlite_store, tmp_path, media):  # noqa: F811
    memory = ModelMemory(free_bytes=lambda: 0)  # an accelerator with nothing free
    listed = _run(sqlite_store, tmp_path, memory, [
        vace_row(media, "D", depth_model="tiny_depth_anything"), _other_model()])
    assert memory.auxiliary_names == []
    assert "auxiliary=" not in listed


def test_auxiliary_models_stay_while_memory_allows_and_are_freed_when_a_load_needs_the_room():
    free = {"bytes": 80 * 2**30}
    memory = ModelMemory(free_bytes=lambda: free["bytes"])
    depth = memory.auxiliary("depth:small", object)
    assert memory.auxiliary("depth:small", object) is depth  # kept, not rebuilt
    assert memory.make_room(10 * 2**30, reason="loading t2v") == [] and memory.auxiliary_names == ["depth:small"]
    free["bytes"] = 11 * 2**30  # less than the next model's need plus the headroom
    assert memory.make_room(10 * 2**30, reason="loading t2v") == ["depth:small"]
    assert memory.auxiliary_names == []
    assert ModelMemory(free_bytes=lambda: None).short_of(10**15) is False  # no accelerator: never in the way


def test_tasks_workers_lists_the_auxiliary_models_a_worker_keeps(sqlite_store, tmp_path):
    from source.worker.loop import Worker
    from source.worker.settings import WorkerSettings

    memory = ModelMemory(free_bytes=lambda: None)
    memory.auxiliary("pose:mediapipe", object)
    sqlite_store.add_task(NewTask("ping", {}))
    worker = Worker(sqlite_store, WorkerSettings(worker_id="aux-w", main_output_dir=tmp_path / "out"),
                    exit_when_idle=True, models=memory)
    assert worker.run() == 0
    assert "auxiliary=pose:mediapipe" in tasks_cli(sqlite_store.path, "workers").stdout
