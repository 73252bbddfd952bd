"""TeaCache, the step caches on two-expert Wan 2.2 models and RIFLEx, asked for by rows through the worker:
applied and recorded in result, or refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from tests.engine.test_generate_video import read_video
from tests.generation.test_generation_tasks import run_worker_in_process


def run_rows(store, out, model: str, *rows: dict, task_type: str = "t2v") -> list:
    ids = [store.add_task(NewTask(task_type, {"model": model, "prompt": "a cat dances", "seed": 7, **row}))
           for row in rows]
    run_worker_in_process(store, out)
    return [store.get_task(i) for i in ids]


def difference(a, b) -> float:
    return float(np.abs(read_video(a.output_location).astype(float) - read_video(b.output_location)).mean())


def test_tea_step_cache_skips_passes_after_the_start_step_and_reports_them(sqlite_store, tmp_path):
    steps = {"num_inference_steps": 10}
    tea = {**steps, "skip_steps_cache_type": "tea", "skip_steps_multiplier": 2}
    plain, cached, late = run_rows(sqlite_store, tmp_path / "out", "tiny_t2v", steps,
                                   {**tea, "skip_steps_start_step_perc": 30},
                                   {**tea, "skip_steps_start_step_perc": 100})
    for row in (plain, cached, late):
        assert row.status is TaskStatus.COMPLETE, row.error_message
    report = cached.result["step_cache"]
    assert report["type"] == "tea" and report["coefficients"] == "model definition"
    assert report["passes_skipped"] == report["transformer_passes"] - report["full_passes"]
    assert report["passes_skipped"] == 10 - report["planned_full_steps"] == len(report["skipped_steps"]) > 0
    assert min(report["skipped_steps"]) >= report["start_step"] == 3
    assert 9 not in report["skipped_steps"]  # WanGP's TeaCache always runs the last step
    assert late.result["step_cache"]["passes_skipped"] == 0  # never before the start percentage
    assert "step_cache" not in plain.result
    assert difference(cached, plain) > difference(late, plain) and difference(late, plain) < 1


@pytest.mark.parametrize("cache_type", ["mag", "tea"])
def test_step_caches_run_per_expert_on_two_expert_wan_2_2(sqlite_store, tmp_path, cache_type):
    steps = {"num_inference_steps": 16}
    plain, cached = run_rows(sqlite_store, tmp_path / "out", "tiny_t2v_2_2", steps,
                             {**steps, "skip_steps_cache_type": cache_type, "skip_steps_multiplier": 2.5})
    for row in (plain, cached):
        assert row.status is TaskStatus.COMPLETE, row.error_message
    report = cached.result["step_cache"]
    switch = report["expert_switch_step"]
    assert 2 < switch < 14
    assert report["passes_skipped"] == len(report["skipped_steps"]) > 0
    assert not {0, 1, switch, switch + 1} & set(report["skipped_steps"])
    assert difference(cached, plain) > 0


BENCH = {"resolution": "32x32", "num_inference_steps": 2}


def test_riflex_forced_on_changes_the_frames_and_says_with_which_k_and_length(sqlite_store, tmp_path):
    # tiny_t2v_bench: its rotary embedding has WanGP's 6th time frequency (tiny_t2v's has only 2).
    short = {**BENCH, "video_length": 5}
    off, on, auto = run_rows(sqlite_store, tmp_path / "out", "tiny_t2v_bench", {**short, "RIFLEx_setting": 2},
                             {**short, "RIFLEx_setting": 1}, {**short, "RIFLEx_setting": 0})
    for row in (off, on, auto):
        assert row.status is TaskStatus.COMPLETE, row.error_message
    assert on.result["riflex"]["applied"] is True
    assert on.result["riflex"]["k"] == 6 and on.result["riflex"]["L"] == [2]  # 5 frames: 2 latent frames
    assert difference(on, off) > 0.5
    # Automatic RIFLEx stays off up to 6 s of video (97 frames at 16 fps): the same video as off.
    assert auto.result["riflex"] == {"setting": 0, "applied": False, "auto_above_frames": 97}
    assert difference(auto, off) == 0
    assert "riflex" not in off.result or off.result["riflex"]["applied"] is False


def test_automatic_riflex_switches_on_past_97_frames(sqlite_store, tmp_path):
    long = {**BENCH, "video_length": 101}
    auto, off = run_rows(sqlite_store, tmp_path / "out", "tiny_t2v_bench", long, {**long, "RIFLEx_setting": 2})
    for row in (auto, off):
        assert row.status is TaskStatus.COMPLETE, row.error_message
    assert auto.result["riflex"]["applied"] is True and auto.result["riflex"]["L"] == [26]
    assert auto.result["parameter_sources"]["RIFLEx_setting"] == "system"
    assert difference(auto, off) > 0.5


@pytest.mark.parametrize(("model", "task_type", "params", "message"), [
    ("tiny_t2v", "t2v", {"RIFLEx_setting": 1},
     "params.RIFLEx_setting 1: RIFLEx lowers the 6th time frequency of the rotary embedding and this model's has 2"),
    ("tiny_ltxv", "ltxv", {"RIFLEx_setting": 1}, "params.RIFLEx_setting 1: RIFLEx is built for the Wan"),
    ("tiny_flux", "flux", {"RIFLEx_setting": 1}, "params.RIFLEx_setting 1: RIFLEx changes the time axis of a video"),
    ("tiny_flux", "flux", {"skip_steps_cache_type": "tea"},
     "params.skip_steps_cache_type 'tea': step caches are calibrated for Wan models only"),
])
def test_riflex_and_tea_where_they_cannot_apply_fail_the_row(sqlite_store, tmp_path, model, task_type, params,
                                                            message):
    (row,) = run_rows(sqlite_store, tmp_path / "out", model, params, task_type=task_type)
    assert row.status is TaskStatus.FAILED
    assert message in row.error_message, row.error_message
