"""Paths built from params stay inside the output root: `..`, absolute paths and symlinks are refused."""

from __future__ import annotations

import pytest

from source.errors import InvalidParams
from source.task_files.paths import inside_root, safe_filename


@pytest.mark.parametrize("parts", [("..", "etc", "passwd"), ("a", "..", "..", "x"), ("/etc/passwd",), ("/",)])
def test_escaping_paths_are_refused(tmp_path, parts):
    with pytest.raises(InvalidParams, match="leaves the output directory"):
        inside_root(tmp_path / "root", *parts)


def test_symlink_pointing_outside_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(InvalidParams, match="leaves the output directory"):
        inside_root(root, "link", "secret.txt")


def test_paths_inside_the_root_resolve_normally(tmp_path):
    root = tmp_path / "root"
    assert inside_root(root, "sub", "..", "file.mp4") == (root / "file.mp4").resolve()
    assert inside_root(root, "a", "b.png") == (root / "a" / "b.png").resolve()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("../../etc/passwd", "passwd"), ("my video.mp4", "my_video.mp4"), ("..", "output"), ("a/b\\c;rm -rf", "b_c_rm_-rf")],
)
def test_safe_filename_keeps_only_a_plain_name(name, expected):
    assert safe_filename(name) == expected


def test_worker_rows_with_escaping_output_dirs_fail_and_write_nothing_outside(sqlite_store, tmp_path):
    import numpy as np

    from source.db.models import NewTask, TaskStatus
    from source.media.write import write_video
    from source.worker.loop import Worker
    from source.worker.settings import WorkerSettings

    root, outside = tmp_path / "out", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    video = write_video(np.zeros((3, 16, 16, 3)), tmp_path / "in.mp4", 8)
    escaping = ["../outside", str(outside), "link", "link/deeper", "a/../../outside", "/etc"]
    ids = {d: sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": str(video), "frame_index": 0,
                                                              "output_dir": d})) for d in escaping}
    inside = sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": str(video), "frame_index": 0,
                                                             "output_dir": "shots/day1"}))
    Worker(sqlite_store, WorkerSettings(worker_id="p", main_output_dir=root, input_roots=(tmp_path,)), exit_when_idle=True).run()
    for output_dir, task_id in ids.items():
        row = sqlite_store.get_task(task_id)
        assert row.status is TaskStatus.FAILED, output_dir
        assert "leaves the output directory" in row.error_message, (output_dir, row.error_message)
    assert list(outside.iterdir()) == []
    row = sqlite_store.get_task(inside)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.output_location.startswith(str((root / "shots" / "day1").resolve()))
