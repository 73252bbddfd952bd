"""Where producers' ``output_dir``/``output_path`` land: inside the output root, never nested twice, never
over another task's file (extract_frame and rife_interpolate_images through a real in-process worker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from source.db.models import NewTask, TaskStatus
from source.media.write import write_video
from source.task_files.paths import under_output_root
from tests.orchestrators.conftest import run_in_process


def _video(tmp_path: Path) -> str:
    return str(write_video(np.random.default_rng(0).random((5, 32, 32, 3)), tmp_path / "in.mp4", 16))


def test_output_dir_naming_the_output_root_is_not_nested_twice(sqlite_store, tmp_path):
    out = tmp_path / "outputs"
    task = sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": _video(tmp_path),
                                                           "output_dir": "outputs/openpose"}))
    run_in_process(sqlite_store, out)
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert Path(row.output_location).parent == out.resolve() / "openpose"
    assert not (out / "outputs").exists()


def test_a_path_relative_to_the_working_directory_inside_the_root_is_taken_as_it_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data" / "outputs"
    assert under_output_root(root, "data/outputs/pose") == root.resolve() / "pose"
    assert under_output_root(root, "outputs/pose") == root.resolve() / "pose"
    assert under_output_root(root, "pose") == root.resolve() / "pose"


def test_two_rows_with_the_same_output_path_keep_both_files(sqlite_store, tmp_path):
    images = []
    for level in (30, 220):
        path = tmp_path / f"i{level}.png"
        Image.fromarray(np.full((24, 32, 3), level, np.uint8)).save(path)
        images.append(str(path))
    params = {"input_image_path1": images[0], "input_image_path2": images[1], "frames": 3, "resolution": "32x24",
              "method": "flow", "output_path": "clips/bridge.mp4"}
    first, second = (sqlite_store.add_task(NewTask("rife_interpolate_images", params)) for _ in range(2))
    out = tmp_path / "out"
    run_in_process(sqlite_store, out)
    rows = [sqlite_store.get_task(t) for t in (first, second)]
    assert all(r.status is TaskStatus.COMPLETE for r in rows), [r.error_message for r in rows]
    assert rows[0].output_location == str(out.resolve() / "clips" / "bridge.mp4")
    assert rows[1].output_location == str(out.resolve() / "clips" / f"{second}_bridge.mp4")
    assert Path(rows[0].output_location).is_file() and Path(rows[1].output_location).is_file()
