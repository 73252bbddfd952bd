"""video_enhance rows as Reigh's videoEnhance resolver builds them, through a real worker: interpolation
(frames inserted, fps recomputed or kept), scene cuts held, the source's sound kept, upscaling."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.media.audio import has_audio
from source.media.video import read_video, save_video, video_info
from tests.helpers import run_worker
from tests.video import reigh_rows
from tests.video.clips import make_clip

FPS = 16
UPSCALER_PRESENT = importlib.util.find_spec("source.media.upscale") is not None


@pytest.mark.slow
def test_video_enhance_rows_interpolate_hold_cuts_and_keep_sound(sqlite_store, tmp_path):
    clip = str(make_clip(tmp_path / "clip.mp4", 12, 0, fps=FPS, tone_hz=440.0))
    halves = np.concatenate([read_video(make_clip(tmp_path / "a.mp4", 6, 0), "a"),
                             255 - read_video(make_clip(tmp_path / "b.mp4", 6, 1), "b")])
    cut = str(save_video(halves, tmp_path / "cut.mp4", FPS))
    smooth = sqlite_store.add_task(NewTask("video_enhance", reigh_rows.video_enhance(
        clip, enable_interpolation=True, enable_upscale=False, interpolation={"num_frames": 2})))
    slow = sqlite_store.add_task(NewTask("video_enhance", reigh_rows.video_enhance(
        clip, enable_interpolation=True, enable_upscale=False,
        interpolation={"num_frames": 1, "use_calculated_fps": False, "loop": True})))
    cuts = sqlite_store.add_task(NewTask("video_enhance", reigh_rows.video_enhance(
        cut, enable_interpolation=True, enable_upscale=False,
        interpolation={"num_frames": 3, "use_scene_detection": True, "video_quality": "maximum"})))
    upscaled = sqlite_store.add_task(NewTask("video_enhance", {**reigh_rows.video_enhance(
        clip, enable_interpolation=False, enable_upscale=True, upscale={"upscale_factor": 2}),
        **({"upscale": {"upscale_factor": 2, "color_fix": True, "model": "tiny_swin2sr_x2"}} if UPSCALER_PRESENT else {})}))
    flashvsr = sqlite_store.add_task(NewTask("video_enhance", reigh_rows.video_enhance(
        clip, enable_interpolation=False, enable_upscale=True, upscale={"acceleration": "full"})))
    run = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--input-roots", str(tmp_path), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    row = sqlite_store.get_task(smooth)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    info = video_info(row.output_location, "out")
    assert info.frames == (12 - 1) * (2 + 1) + 1 == row.result["frames"]
    assert round(info.fps) == FPS * 3  # same duration
    assert row.result["audio"] == "source" and has_audio(row.output_location)
    assert "ignored_params" not in row.result, row.result["ignored_params"]
    out, src = read_video(row.output_location, "out").astype(float), read_video(clip, "src").astype(float)
    assert np.abs(out[::3] - src).mean() < 6  # the source frames are all still there, every third

    row = sqlite_store.get_task(slow)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    info = video_info(row.output_location, "out")
    assert info.frames == 12 * 2 and round(info.fps) == FPS  # loop: one more bridge, back to the first frame
    assert row.result["audio"].startswith("dropped") and not has_audio(row.output_location)

    row = sqlite_store.get_task(cuts)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.result["interpolation"]["scene_cuts_held"] == [5] and row.result["crf"] == 10
    out = read_video(row.output_location, "out").astype(float)
    assert len(out) == 11 * 4 + 1
    held = out[5 * 4: 5 * 4 + 4]  # frame 5 and its three held copies: no morph across the cut
    assert np.abs(held - held[0]).mean() < 3

    row = sqlite_store.get_task(upscaled)
    if UPSCALER_PRESENT:
        assert row.status is TaskStatus.COMPLETE, row.error_message
        assert video_info(row.output_location, "out").size == (64, 64)
        # random tiny weights make noise of any colour; the colour fix brings each frame's back to the source's
        out, src = read_video(row.output_location, "out"), read_video(clip, "src")
        assert np.abs(out.mean(axis=(1, 2)) - src.mean(axis=(1, 2))).max() < 8
        assert row.result["upscale"]["model"] == "tiny_swin2sr_x2"
    else:
        assert row.status is TaskStatus.FAILED and "no super-resolution model" in row.error_message
    row = sqlite_store.get_task(flashvsr)
    assert row.status is TaskStatus.FAILED and "upscale.acceleration is a FlashVSR setting" in row.error_message
