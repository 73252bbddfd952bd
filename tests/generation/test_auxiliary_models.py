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
def test_depth_and_pose_rows_then_another_model_leave_no_auxiliary_model_when_memory_is_short(
        sqlite_store, tmp_path, media):  # noqa: F811
    memory = ModelMemory(free_bytes=lambda: 0)  # an accelerator with nothing free
    listed = _run(sqlite_store, tmp_path, memory, [
        vace_row(media, "D", depth_model="tiny_depth_anything"), vace_row(media, "P"), _other_model()])
    assert memory.auxiliary_names == []
    assert "auxiliary=" not in listed


@pytest.mark.slow
def test_auxiliary_models_stay_loaded_while_memory_allows_and_tasks_workers_lists_them(
        sqlite_store, tmp_path, media):  # noqa: F811
    memory = ModelMemory(free_bytes=lambda: 80 * 2**30)
    listed = _run(sqlite_store, tmp_path, memory, [
        vace_row(media, "D", depth_model="tiny_depth_anything"), _other_model()])
    assert memory.auxiliary_names == ["depth:tiny_depth_anything"]
    assert "auxiliary=depth:tiny_depth_anything" in listed
