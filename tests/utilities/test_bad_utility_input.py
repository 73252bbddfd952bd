"""Utility tasks with bad input: each row ends Failed with its own specific stored message, and the
worker process goes on to the next row."""

from __future__ import annotations

import pytest

from source.db.models import NewTask, TaskStatus
from tests.helpers import run_worker

RIFE = {"input_image_path1": "{image_a}", "input_image_path2": "{image_b}", "frames": 5, "resolution": "64x48",
        "method": "flow"}


def rife(**changes):
    """Valid rife params with ``changes`` (a None value drops the key)."""
    return {k: v for k, v in {**RIFE, **changes}.items() if v is not None}


# (task_type, params with {name} placeholders for the media fixture, a fragment the stored error must contain)
BAD_ROWS = [
    ("extract_frame", {}, "params: give input_video_path or input_video_task_id"),
    ("extract_frame", {"input_video_path": "/nowhere/clip.mp4"}, "params.input_video_path: file not found: /nowhere/clip.mp4"),
    ("extract_frame", {"input_video_path": "{not_image}"}, "notes.png is not a readable video"),
    ("extract_frame", {"input_video_path": "{video}", "frame_index": 5},
     "params.frame_index 5 is out of range: the video has 5 frames (valid: -5..4)"),
    ("extract_frame", {"input_video_path": "{video}", "frame_index": -6}, "params.frame_index -6 is out of range"),
    ("extract_frame", {"input_video_path": "{video}", "frame_index": "last"},
     "params.frame_index: Input should be a valid integer"),
    ("extract_frame", {"input_video_path": "ftp://example.com/clip.mp4"},
     "params.input_video_path: URL scheme 'ftp' is not allowed (only http and https)"),
    ("extract_frame", {"input_video_path": "{video}", "output_dir": "../../escape"}, "leaves the output directory"),
    ("rife_interpolate_images", rife(frames=0),
     "params.frames: Input should be greater than or equal to 2"),
    ("rife_interpolate_images", rife(frames=100_000),
     "params.frames: Input should be less than or equal to 1000"),
    ("rife_interpolate_images", rife(resolution="64by48"),
     "params.resolution: Value error, must look like 'WIDTHxHEIGHT' (e.g. '832x480'), got '64by48'"),
    ("rife_interpolate_images", rife(resolution="65x48"),
     "params.resolution: Value error, width and height must be even for H.264 (yuv420p), got 65x48"),
    ("rife_interpolate_images", rife(resolution="99999x48"),
     "params.resolution: Value error, must be at most 4096 on each side"),
    ("rife_interpolate_images", rife(resolution=None),
     "params.resolution: Field required"),
    ("rife_interpolate_images", rife(input_image_path1="{not_image}"),
     "params.input_image_path1: notes.png is not a readable image"),
    ("rife_interpolate_images", rife(input_image_path2="/nowhere/b.png"),
     "params.input_image_path2: file not found: /nowhere/b.png"),
    ("rife_interpolate_images", rife(method="magic"),
     "params.method: Input should be 'auto', 'rife' or 'flow'"),
    ("rife_interpolate_images", rife(output_path="clip.gif"),
     "params.output_path must end in .mp4, got 'clip.gif'"),
    ("generate_openpose", {"input_image_path": "{not_image}"}, "params.input_image_path: notes.png is not a readable image"),
    ("generate_openpose", {"input_image_path": "{huge}"},
     "params.input_image_path: huge.png is 9000x8000; the limit is 67108864 pixels"),
    ("generate_openpose", {}, "params: give input_image_path or input_image_task_id"),
    ("generate_depth", {"input_image_path": "/nowhere/photo.jpg", "model": "tiny_depth_anything"},
     "params.input_image_path: file not found: /nowhere/photo.jpg"),
    ("generate_depth", {"input_image_path": "{image_a}", "model": "midas_v9"},
     "params.model: unknown depth model 'midas_v9'; known:"),
]


def _fill(value, media):
    return value.format(**{k: str(v) for k, v in media.items()}) if isinstance(value, str) else value


@pytest.mark.slow
def test_every_bad_utility_row_fails_with_a_specific_message_and_the_worker_goes_on(sqlite_store, tmp_path, media):
    ids = [sqlite_store.add_task(NewTask(task_type, {k: _fill(v, media) for k, v in params.items()}, priority=1))
           for task_type, params, _ in BAD_ROWS]
    good = sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": str(media["video"])}))

    result = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--input-roots", str(media["video"].parent))

    assert result.returncode == 0, result.stderr[-3000:]
    for task_id, (task_type, _, fragment) in zip(ids, BAD_ROWS, strict=True):
        row = sqlite_store.get_task(task_id)
        assert row.status is TaskStatus.FAILED, (task_type, fragment, row.status)
        assert fragment in row.error_message, (task_type, row.error_message[:300])
    assert sqlite_store.get_task(good).status is TaskStatus.COMPLETE
    assert len({sqlite_store.get_task(task_id).error_message for task_id in ids}) == len(BAD_ROWS)
