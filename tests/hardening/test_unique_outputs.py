"""Every output and work folder is named from the full task id (issue #21, point 5). The probe: names
kept only the last path part of the id, so ``teamA/job1`` and ``teamB/job1`` wrote the same file and one
row's output_location showed the other's result; the ``_work`` folder was shared too; a 300-character
id failed with a raw ``File name too long``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from source.db.models import NewTask, TaskStatus
from source.media.write import write_image, write_video
from source.worker.loop import Worker
from source.worker.settings import WorkerSettings
from tests.hardening.boundary import snapshot, touched_outside

HOSTILE_IDS = ["teamA/job1", "teamB/job1", "job1", "x" * 200, "x" * 199, "../../../escape", "a/../../b", "..", ".",
               "team A\\job 1", "ünï/cødé", "job1+0"]


def test_ids_that_differ_only_before_a_slash_or_in_length_never_share_an_output(sqlite_store, tmp_path):
    out, beside = tmp_path / "out", tmp_path / "beside"
    beside.mkdir()
    for task_id in HOSTILE_IDS:
        sqlite_store.add_task(NewTask("ping", {"message": task_id}, id=task_id))
    before = snapshot(tmp_path / "beside", out)
    Worker(sqlite_store, WorkerSettings(worker_id="ids", main_output_dir=out), exit_when_idle=True).run()

    rows = [sqlite_store.get_task(task_id) for task_id in HOSTILE_IDS]
    for row in rows:
        assert row.status is TaskStatus.COMPLETE, (row.id[:40], row.error_message)
        written = Path(row.output_location)
        assert written.parent == out.resolve()  # never above or beside the output root
        assert [json.loads(line)["task_id"] for line in written.read_text().splitlines()] == [row.id]
    assert len({row.output_location for row in rows}) == len(rows)
    own = [Path(row.output_location) for row in rows] + [out / "_work"]
    assert touched_outside(before, snapshot(tmp_path / "beside", out), *own) == []


def test_work_folders_are_distinct_per_full_id_and_stay_inside_the_output_root(tmp_path):
    from source.task_files.fetch import engine_inputs
    from source.task_files.paths import task_stem, task_work_dir

    folders = [task_work_dir(tmp_path, task_id) for task_id in HOSTILE_IDS]
    assert len(set(folders)) == len(folders)
    for folder in folders:
        assert folder.parent == (tmp_path / "_work").resolve() and folder.is_dir()
        assert len(folder.name) <= 100
    # The engine's pass (headless_wgp) uses the same folder as the handler's context.
    assert engine_inputs(tmp_path, "teamA/job1").work_dir == task_work_dir(tmp_path, "teamA/job1")
    assert task_stem("plain-id_1.2") == "plain-id_1.2"  # plain ids keep their names (and old outputs' paths)


def test_utility_outputs_of_same_named_ids_in_an_output_dir_stay_apart(sqlite_store, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    clip = write_video(np.ones((3, 16, 16, 3)) * 0.3, out / "clip.mp4", 8)
    for task_id in ("teamA/job1", "teamB/job1"):
        sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": str(clip), "output_dir": "frames"},
                                      id=task_id))
    Worker(sqlite_store, WorkerSettings(worker_id="ids", main_output_dir=out), exit_when_idle=True).run()
    a, b = (sqlite_store.get_task(i) for i in ("teamA/job1", "teamB/job1"))
    assert a.status is TaskStatus.COMPLETE and b.status is TaskStatus.COMPLETE, (a.error_message, b.error_message)
    assert a.output_location != b.output_location
    assert Path(a.output_location).parent == Path(b.output_location).parent == (out / "frames").resolve()


def test_storage_objects_of_ids_that_escape_alike_stay_apart(sqlite_store, tmp_path):
    from source.worker.publishing import SupabaseStoragePublisher

    publisher = object.__new__(SupabaseStoragePublisher)  # object_path needs no client
    ids = ["teamA/job1", "teamA_job1", "teamA job1", "../job1"]
    for task_id in ids:
        sqlite_store.add_task(NewTask("ping", {}, id=task_id, project_id="p1"))
    paths = [publisher.object_path(sqlite_store.get_task(i), tmp_path / "x_ping.json") for i in ids]
    assert len(set(paths)) == len(ids)
    assert all(p.startswith("p1/") and ".." not in p.split("/") for p in paths)


def test_a_row_cannot_write_into_the_work_folders(sqlite_store, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    clip = write_video(np.ones((3, 16, 16, 3)) * 0.3, out / "clip.mp4", 8)
    victim = out / "_work" / "victim"
    victim.mkdir(parents=True)
    (victim / "download.mp4").write_bytes(b"the victim's input")
    image = str(write_image(np.full((16, 16, 3), 0.5), out / "still.png"))
    rows = [("extract_frame", {"input_video_path": str(clip), "output_dir": "_work/victim"}),
            ("rife_interpolate_images", {"input_image_path1": image, "input_image_path2": image, "frames": 2,
                                         "resolution": "16x16", "output_path": "_work/victim/download.mp4"})]
    ids = [sqlite_store.add_task(NewTask(task_type, params)) for task_type, params in rows]
    before = snapshot(out)
    Worker(sqlite_store, WorkerSettings(worker_id="ids", main_output_dir=out), exit_when_idle=True).run()
    for task_id, name in zip(ids, ("output_dir", "output_path"), strict=True):
        row = sqlite_store.get_task(task_id)
        assert row.status is TaskStatus.FAILED
        assert row.error_message == f"params.{name} may not point into the _work folder", row.error_message
    assert touched_outside(before, snapshot(out), *(out / "_work" / i for i in ids)) == []
