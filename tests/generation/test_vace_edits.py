"""join_clips and inpaint_frames rows (the older worker's names) through the worker on the tiny VACE model."""

from __future__ import annotations

import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.media.write import write_video
from tests.engine.test_generate_video import read_video
from tests.generation.test_generation_tasks import run_worker_in_process


@pytest.fixture
def clips(tmp_path):
    red = np.zeros((9, 32, 32, 3))
    red[..., 0] = 1
    blue = np.zeros((7, 32, 32, 3))
    blue[..., 2] = 1
    ramp = np.linspace(0, 1, 12)[:, None, None, None] * np.ones((12, 32, 32, 3))
    return {"red": str(write_video(red, tmp_path / "red.mp4", 24)), "blue": str(write_video(blue, tmp_path / "blue.mp4", 24)),
            "ramp": str(write_video(ramp, tmp_path / "ramp.mp4", 24))}


def test_join_clips_inserts_a_generated_bridge_keeping_both_clips_and_their_fps(sqlite_store, tmp_path, clips):
    task = sqlite_store.add_task(NewTask("join_clips", {
        "starting_video_path": clips["red"], "ending_video_path": clips["blue"], "context_frame_count": 2,
        "gap_frame_count": 4, "prompt": "a bridge", "model": "tiny_vace", "seed": 1, "keep_bridging_images": False}))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    # 2 + 4 + 2 = 8 is not 4n+1: the gap grows to 5; 9 + 5 + 7 frames.
    assert row.result["gap_frame_count"] == 5 and row.result["requested_gap_frame_count"] == 4
    video = read_video(row.output_location)  # BGR
    assert video.shape[0] == 21 and row.result["frames"] == 21 and row.result["fps"] == 24
    assert video[:9, ..., 2].mean() > 200 and video[-7:, ..., 0].mean() > 200  # red clip, then blue clip
    assert "ignored_params" not in row.result  # keep_bridging_images is honoured (false here)


def test_join_clips_replace_mode_takes_the_bridge_out_of_the_clips_boundary(sqlite_store, tmp_path, clips):
    task = sqlite_store.add_task(NewTask("join_clips", {
        "starting_video_path": clips["red"], "ending_video_path": clips["blue"], "context_frame_count": 2,
        "gap_frame_count": 4, "replace_mode": True, "keep_bridging_images": True, "prompt": "a bridge",
        "model": "tiny_vace", "seed": 1}))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    video = read_video(row.output_location)  # BGR
    # the 5-frame gap replaces 2 frames of red's end and 3 of blue's start: 9 + 7 frames in all
    assert video.shape[0] == 9 + 7 == row.result["frames"] and row.result["replace_mode"] is True
    assert video[:7, ..., 2].mean() > 200 and video[-4:, ..., 0].mean() > 200


def test_inpaint_frames_regenerates_only_the_range(sqlite_store, tmp_path, clips):
    task = sqlite_store.add_task(NewTask("inpaint_frames", {
        "video_path": clips["ramp"], "inpaint_start_frame": 5, "inpaint_end_frame": 7, "context_frame_count": 2,
        "prompt": "fill", "model": "tiny_vace", "seed": 1}))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    original, video = read_video(clips["ramp"]).astype(float), read_video(row.output_location).astype(float)
    assert video.shape == original.shape and row.result["fps"] == 24
    assert row.result["vace_frames"] == 9  # 2 + 2 + 2 frames grown to 4n+1 with more context after
    keep = np.r_[0:5, 7:12]
    assert np.abs(video[keep] - original[keep]).mean() < 3
    assert np.abs(video[5:7] - original[5:7]).mean() > 3


@pytest.mark.parametrize(("task_type", "params", "message"), [
    ("inpaint_frames", {"video_path": "ramp", "inpaint_start_frame": 8, "inpaint_end_frame": 20},
     "must name a range inside the video's 12 frames"),
    ("join_clips", {"starting_video_path": "red", "ending_video_path": "blue", "replace_mode": True,
                    "gap_frame_count": 30}, "join 0: replace_mode takes"),
    ("join_clips", {"starting_video_path": "red"}, "give ending_video_path or ending_video_task_id"),
])
def test_bad_vace_edit_rows_fail_with_a_specific_message(sqlite_store, tmp_path, clips, task_type, params, message):
    params = {k: clips.get(v, v) if isinstance(v, str) else v for k, v in params.items()}
    task = sqlite_store.add_task(NewTask(task_type, {"model": "tiny_vace", "prompt": "x", **params}))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.FAILED and message in row.error_message, row.error_message
