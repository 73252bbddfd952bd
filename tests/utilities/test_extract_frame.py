"""``extract_frame`` through a real worker and SQLite store: index rules, task-id inputs, errors."""

from __future__ import annotations

import cv2
import pytest

from source.db.models import NewTask, TaskStatus
from source.handlers.extract_frame import read_frame
from tests.utilities.conftest import GREY_LEVELS, run_worker_until_idle


@pytest.mark.parametrize(("index", "expected"), [(0, 0), (2, 2), (4, 4), (-1, 4), (-5, 0)])
def test_read_frame_counts_negative_indices_from_the_end(media, index, expected):
    frame, absolute = read_frame(media["video"], index)
    assert absolute == expected
    assert abs(float(frame.mean()) - GREY_LEVELS[expected]) < 4


def test_extract_frame_writes_the_requested_frame_as_png(sqlite_store, tmp_path, media):
    out = tmp_path / "out"
    by_path = sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": str(media["video"]),
                                                              "frame_index": -2}))
    default_index = sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": str(media["video"]),
                                                                    "output_dir": "frames"}))
    run_worker_until_idle(sqlite_store, out)

    row = sqlite_store.get_task(by_path)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.output_location == str(out.resolve() / f"{by_path}_frame_3.png")
    image = cv2.imread(row.output_location)
    assert image.shape == (32, 48, 3) and abs(float(image.mean()) - GREY_LEVELS[3]) < 4
    assert row.result["frame_index"] == 3
    assert {"resolve_input", "decode", "write", "total"} <= set(row.result["timings"])

    first = sqlite_store.get_task(default_index)
    assert first.status is TaskStatus.COMPLETE, first.error_message
    assert first.output_location == str(out.resolve() / "frames" / f"{default_index}_frame_0.png")
    assert abs(float(cv2.imread(first.output_location).mean()) - GREY_LEVELS[0]) < 4


def test_extract_frame_reads_the_video_another_task_produced(sqlite_store, tmp_path, media):
    producer = sqlite_store.add_task(NewTask("rife_interpolate_images", {
        "input_image_path1": str(media["image_a"]), "input_image_path2": str(media["image_b"]),
        "frames": 6, "resolution": "48x32", "method": "flow"}))
    consumer = sqlite_store.add_task(NewTask("extract_frame", {"input_video_task_id": producer, "frame_index": -1},
                                             dependant_on=producer))
    run_worker_until_idle(sqlite_store, tmp_path / "out")

    row = sqlite_store.get_task(consumer)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.result["frame_index"] == 5
    assert abs(float(cv2.imread(row.output_location).mean()) - 220) < 5  # last frame = second image


def test_extract_frame_from_a_task_without_output_names_that_task(sqlite_store, tmp_path):
    silent = sqlite_store.add_task(NewTask("ping", {}))
    claimed = sqlite_store.claim_next_task("producer", lease_seconds=30)
    assert claimed.id == silent
    assert sqlite_store.complete_task(silent, "producer", output_location=None, result={})
    unfinished = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 1}, priority=-5))
    ids = {
        "no-output": sqlite_store.add_task(NewTask("extract_frame", {"input_video_task_id": silent})),
        "unknown": sqlite_store.add_task(NewTask("extract_frame", {"input_video_task_id": "no-such-task"})),
        "unfinished": sqlite_store.add_task(NewTask("extract_frame", {"input_video_task_id": unfinished}, priority=5)),
    }
    run_worker_until_idle(sqlite_store, tmp_path / "out")
    errors = {name: sqlite_store.get_task(task_id).error_message for name, task_id in ids.items()}
    assert errors == {
        "no-output": f"params.input_video_task_id: task {silent!r} is Complete but has no output_location",
        "unknown": "params.input_video_task_id: no task with id 'no-such-task'",
        "unfinished": f"params.input_video_task_id: task {unfinished!r} is Queued, not Complete",
    }


def test_utility_inputs_may_be_http_urls(sqlite_store, tmp_path, media_server):
    out = tmp_path / "out"
    frame = sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": f"{media_server}/ramp.mp4",
                                                            "frame_index": 1}))
    missing = sqlite_store.add_task(NewTask("generate_depth", {"input_image_path": f"{media_server}/gone.png",
                                                               "model": "tiny_depth_anything"}))
    run_worker_until_idle(sqlite_store, out)
    row = sqlite_store.get_task(frame)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert abs(float(cv2.imread(row.output_location).mean()) - GREY_LEVELS[1]) < 4
    assert sqlite_store.get_task(missing).error_message == (
        f"params.input_image_path: GET {media_server}/gone.png returned HTTP 404")
