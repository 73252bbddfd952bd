"""The opt-in switches for frontends written against the older worker: off by default, honoured when on."""

from __future__ import annotations

from pathlib import Path

from source.db.models import NewTask, TaskStatus
from tests.orchestrators.conftest import run_in_process

T2V = {"model": "tiny_t2v", "prompt": "a red cat", "resolution": "32x32", "video_length": 5,
       "num_inference_steps": 2, "seed": 1}


def test_an_unknown_task_type_fails_by_default_and_names_the_known_ones(sqlite_store, tmp_path):
    task = sqlite_store.add_task(NewTask("my_custom_gen", T2V))
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.FAILED and "unknown task type 'my_custom_gen'" in row.error_message


def test_legacy_unknown_task_types_generates_an_unknown_type_with_a_model(sqlite_store, tmp_path):
    task = sqlite_store.add_task(NewTask("my_custom_gen", T2V))
    no_model = sqlite_store.add_task(NewTask("my_other_type", {"prompt": "x"}))
    run_in_process(sqlite_store, tmp_path / "out", legacy_unknown_task_types=True)
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.result["generated_as"] == "generate_video" and row.result["model"] == "tiny_t2v"
    assert Path(row.output_location).suffix == ".mp4" and Path(row.output_location).is_file()
    other = sqlite_store.get_task(no_model)
    assert other.status is TaskStatus.FAILED and "unknown task type 'my_other_type'" in other.error_message
