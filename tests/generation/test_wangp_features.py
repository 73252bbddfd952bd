"""WanGP's generation features asked for by a row: applied (and recorded in result) or refused by name."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.worker.settings import WorkerSettings
from tests.engine.test_generate_video import read_video
from tests.generation.test_generation_tasks import run_worker_in_process
from tests.helpers import in_process_worker

BASE = {"model": "tiny_t2v", "prompt": "a cat dances", "seed": 7}


def run_rows(store, out: Path, *rows: dict) -> list:
    ids = [store.add_task(NewTask("t2v", {**BASE, **row})) for row in rows]
    run_worker_in_process(store, out)
    return [store.get_task(i) for i in ids]


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
    # No RIFE weights on this machine and no network: temporal upsampling must fall back to optical flow.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_postprocessing_changes_frames_fps_size_and_grain_and_result_says_what_ran(sqlite_store, tmp_path):
    plain, upsampled, grain = run_rows(
        sqlite_store, tmp_path / "out", {},
        {"temporal_upsampling": "rife2", "spatial_upsampling": "lanczos2"},
        {"film_grain_intensity": 0.2, "film_grain_saturation": 0.7},
    )
    for row in (plain, upsampled, grain):
        assert row.status is TaskStatus.COMPLETE, row.error_message
    assert read_video(plain.output_location).shape == (5, 32, 32, 3)
    # rife2: (5 - 1) * 2 + 1 frames at twice the fps; lanczos2: twice the size.
    assert read_video(upsampled.output_location).shape == (9, 64, 64, 3)
    applied = upsampled.result["postprocessing"]
    assert applied["temporal_upsampling"]["method"] == "flow"
    assert "rife_unavailable" in applied["temporal_upsampling"]
    assert applied["temporal_upsampling"]["fps"] == 32 and upsampled.result["fps"] == 32
    assert applied["spatial_upsampling"]["resolution"] == "64x64" and upsampled.result["resolution"] == "64x64"
    assert upsampled.result["frames"] == 9
    assert "postprocessing" not in plain.result
    # Same seed, same video, plus grain: a measurable change, recorded.
    difference = np.abs(read_video(grain.output_location).astype(float) - read_video(plain.output_location)).mean()
    assert difference > 5, difference
    assert grain.result["postprocessing"]["film_grain"] == {"intensity": 0.2, "saturation": 0.7}


def test_every_video_gets_a_first_frame_thumbnail_beside_it(sqlite_store, tmp_path):
    (row,) = run_rows(sqlite_store, tmp_path / "out", {"spatial_upsampling": "lanczos1.5"})
    assert row.status is TaskStatus.COMPLETE, row.error_message
    thumbnail = Path(row.result["thumbnail"])
    assert thumbnail.parent == Path(row.output_location).parent
    image = cv2.imread(str(thumbnail))
    assert image.shape == (48, 48, 3)
    first = cv2.cvtColor(read_video(row.output_location)[0], cv2.COLOR_RGB2BGR)
    assert np.abs(image.astype(float) - first).mean() < 12  # JPEG of the first frame


@pytest.mark.parametrize(("params", "message"), [
    ({"slg_switch": 1, "slg_layers": [9]}, "params.slg_layers [9]: give block indices below"),
    ({"slg_switch": 1, "slg_layers": [0], "slg_start_perc": 50, "slg_end_perc": 10}, "params.slg_start_perc 50"),
    ({"sliding_window_size": 5, "video_length": 9}, "params.sliding_window_size 5: video_length 9 needs several"),
    ({"RIFLEx_setting": 1}, "params.RIFLEx_setting 1: RIFLEx"),
    ({"temporal_upsampling": "rife8"}, "params.temporal_upsampling 'rife8' is not supported"),
    ({"spatial_upsampling": "lanczos3"}, "params.spatial_upsampling 'lanczos3' is not supported"),
    ({"film_grain_intensity": 2}, "params.film_grain_intensity must be between 0 and 1"),
])
def test_a_feature_that_cannot_apply_fails_the_row_naming_the_parameter(sqlite_store, tmp_path, params, message):
    (row,) = run_rows(sqlite_store, tmp_path / "out", params)
    assert row.status is TaskStatus.FAILED
    assert message in row.error_message, row.error_message


def test_temporal_upsampling_of_an_image_model_is_refused(sqlite_store, tmp_path):
    task = sqlite_store.add_task(NewTask("flux", {"model": "tiny_flux", "prompt": "x", "temporal_upsampling": "rife2"}))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.FAILED and "params.temporal_upsampling 'rife2'" in row.error_message


def test_settings_at_their_off_values_complete_and_are_not_reported_ignored(sqlite_store, tmp_path):
    off = {"slg_switch": 0, "NAG_scale": 1, "cfg_star_switch": 0, "apg_switch": 0, "sliding_window_size": 129,
           "sliding_window_overlap": 5, "skip_steps_cache_type": "", "temporal_upsampling": "",
           "spatial_upsampling": "", "film_grain_intensity": 0, "RIFLEx_setting": 0}
    (row,) = run_rows(sqlite_store, tmp_path / "out", off)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert not set(off) & set(row.result.get("ignored_params", []))
    assert row.result["parameter_sources"]["sliding_window_size"] == "task"
    assert read_video(row.output_location).shape[0] == 5


@pytest.mark.postgres
def test_supabase_mode_uploads_the_thumbnail_with_the_video(fake_supabase, supabase_api_store, tmp_path):
    import httpx

    from source.db.supabase_client import make_client
    from source.worker.publishing import SupabaseStoragePublisher
    from tests.pg_fixtures import SERVICE_KEY

    task = supabase_api_store.add_task(NewTask("t2v", BASE, project_id="proj-1"))
    publisher = SupabaseStoragePublisher(make_client(fake_supabase.url, SERVICE_KEY), "image_uploads")
    settings = WorkerSettings(worker_id="gen-w", main_output_dir=tmp_path / "out")
    assert in_process_worker(supabase_api_store, settings, publisher=publisher, exit_when_idle=True).run() == 0
    row = supabase_api_store.get_task(task)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    folder = f"{fake_supabase.url}/storage/v1/object/public/image_uploads/proj-1/{task}/"
    assert row.output_location.startswith(folder) and row.result["thumbnail"].startswith(folder)
    assert row.result["thumbnail"].endswith("_thumb.jpg")
    assert httpx.get(row.result["thumbnail"]).content[:3] == b"\xff\xd8\xff"  # the JPEG itself is served


def test_mag_step_cache_skips_transformer_passes_after_the_start_step_and_reports_them(sqlite_store, tmp_path):
    steps = {"num_inference_steps": 10}
    plain, cached, late, early = run_rows(
        sqlite_store, tmp_path / "out", steps,
        {**steps, "skip_steps_cache_type": "mag", "skip_steps_multiplier": 2, "skip_steps_start_step_perc": 30},
        {**steps, "skip_steps_cache_type": "mag", "skip_steps_multiplier": 2, "skip_steps_start_step_perc": 100},
        {**steps, "skip_steps_cache_type": "mag", "skip_steps_multiplier": 2},
    )
    for row in (plain, cached, late, early):
        assert row.status is TaskStatus.COMPLETE, row.error_message
    report = cached.result["step_cache"]
    # The plan (from the model's magnitude ratios) is what ran: each skipped step is one pass not computed.
    assert report["passes_skipped"] == report["transformer_passes"] - report["full_passes"]
    assert report["passes_skipped"] == 10 - report["planned_full_steps"] > 0
    assert 0.3 <= report["fraction_skipped"] <= 0.6 and report["start_step"] == 3
    # Steps 0 and 1 always run (batched guidance's first step has a different batch to reuse from).
    assert early.result["step_cache"]["start_step"] == 2
    assert late.result["step_cache"]["passes_skipped"] == 0  # never before the start percentage
    assert "step_cache" not in plain.result
    difference = np.abs(read_video(cached.output_location).astype(float) - read_video(plain.output_location)).mean()
    same = np.abs(read_video(late.output_location).astype(float) - read_video(plain.output_location)).mean()
    assert difference > same and same < 1, (difference, same)


def test_step_cache_on_a_family_without_calibration_is_refused(sqlite_store, tmp_path):
    task = sqlite_store.add_task(NewTask("flux", {"model": "tiny_flux", "prompt": "x", "skip_steps_cache_type": "mag"}))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.FAILED
    assert "params.skip_steps_cache_type 'mag': step caches are calibrated for Wan models only" in row.error_message


def test_guidance_variants_change_the_output_and_are_recorded(sqlite_store, tmp_path):
    steps = {"num_inference_steps": 4}
    plain, star, apg, slg = run_rows(sqlite_store, tmp_path / "out", steps,
                                     {**steps, "cfg_star_switch": 1, "cfg_zero_step": 1}, {**steps, "apg_switch": 1},
                                     {**steps, "slg_switch": 1, "slg_layers": "0", "slg_start_perc": 0})
    for row in (plain, star, apg, slg):
        assert row.status is TaskStatus.COMPLETE, row.error_message
    assert star.result["guidance"] == {"variant": "cfg_zero_star", "cfg_zero_step": 1, "steps_combined": 4,
                                       "steps_zeroed": 2}
    assert apg.result["guidance"]["variant"] == "apg" and apg.result["guidance"]["steps_combined"] == 4
    assert slg.result["guidance"]["skip_layer_guidance"] == {"layers": [0], "steps": [0, 3],
                                                             "unconditional_passes_skipping": 3}
    assert "guidance" not in plain.result
    # Zeroing the first two of four steps moves the video visibly, even through the tiny random VAE.
    assert not np.array_equal(read_video(star.output_location), read_video(plain.output_location))


@pytest.mark.parametrize(("task_type", "params", "message"), [
    ("flux", {"model": "tiny_flux", "cfg_star_switch": 1}, "params.cfg_star_switch: this guidance variant needs"),
    ("t2v", {**BASE, "apg_switch": 1, "guidance_scale": 1}, "params.apg_switch: guidance_scale 1 runs no"),
    ("t2v", {**BASE, "apg_switch": 1, "cfg_star_switch": 1}, "choose one"),
    ("flux", {"model": "tiny_flux", "NAG_scale": 2}, "params.NAG_scale 2: normalized attention guidance is built "
                                                     "for Wan models' text cross-attention only, not flux"),
])
def test_a_guidance_variant_that_cannot_apply_is_refused(sqlite_store, tmp_path, task_type, params, message):
    task = sqlite_store.add_task(NewTask(task_type, {"prompt": "x", **params}))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.FAILED and message in row.error_message, row.error_message


def test_image_models_take_spatial_upsampling_and_grain_and_get_no_thumbnail(sqlite_store, tmp_path):
    task = sqlite_store.add_task(NewTask("flux", {"model": "tiny_flux", "prompt": "x", "seed": 2,
                                                  "spatial_upsampling": "lanczos2", "film_grain_intensity": 0.1}))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    width, height = (int(v) for v in row.result["parameters"]["resolution"].split("x"))
    assert cv2.imread(row.output_location).shape[:2] == (height * 2, width * 2)
    assert set(row.result["postprocessing"]) == {"spatial_upsampling", "film_grain"}
    assert "thumbnail" not in row.result


@pytest.fixture
def long_guide(tmp_path):
    from source.media.write import write_video

    ramp = np.linspace(0, 1, 13)[:, None, None, None] * np.ones((13, 32, 32, 3))
    return str(write_video(ramp, tmp_path / "long_guide.mp4", 16))


def test_vace_sliding_windows_make_exactly_the_frames_asked_window_after_window(sqlite_store, tmp_path, long_guide):
    vace = {"model": "tiny_vace", "video_guide": long_guide, "video_length": 13, "sliding_window_size": 9,
            "sliding_window_overlap": 5}
    ids = [sqlite_store.add_task(NewTask("vace", {"prompt": "x", "seed": 5, **vace, **extra}))
           for extra in ({}, {"sliding_window_color_correction_strength": 1.0},
                         {"sliding_window_discard_last_frames": 2})]
    run_worker_in_process(sqlite_store, tmp_path / "out")
    plain, corrected, discarded = (sqlite_store.get_task(i) for i in ids)
    for row in (plain, corrected, discarded):
        assert row.status is TaskStatus.COMPLETE, row.error_message
        assert read_video(row.output_location).shape[0] == 13 and row.result["frames"] == 13
    report = plain.result["sliding_windows"]
    assert report["windows"] == 2 and report["window_frames"] == [9, 9]
    # Dropping the last 2 frames of each window but the last leaves 2 new frames per window: 3 windows.
    assert discarded.result["sliding_windows"]["window_frames"] == [9, 9, 9]
    first = read_video(plain.output_location)[:9].astype(float)
    assert np.abs(read_video(corrected.output_location)[:9] - first).mean() < 1  # window 1 is not corrected
    assert not np.array_equal(read_video(corrected.output_location)[9:], read_video(plain.output_location)[9:])


@pytest.mark.parametrize("model", ["tiny_vace", "tiny_i2v"])
def test_progress_runs_once_across_all_windows_and_cancel_stops_inside_one(tmp_path, long_guide, start_image, model):
    from headless_wgp import WanOrchestrator
    from source.errors import TaskCancelled

    inputs = {"video_guide": long_guide} if model == "tiny_vace" else {"image_start": start_image}
    seen: list[tuple[int, int, str]] = []
    result = WanOrchestrator(tmp_path).generate(
        model, "x", **inputs, video_length=13, sliding_window_size=9, sliding_window_overlap=5,
        num_inference_steps=2, progress=lambda step, total, message: seen.append((step, total, message)))
    assert result.frames == 13
    # step reports only (the phases "loading" and "encoding" are reported beside them)
    steps = [(step, total) for step, total, message in seen if message.startswith("window")]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [message for *_, message in seen if message.startswith("window")][-1].startswith("window 2/2")
    seen.clear()
    with pytest.raises(TaskCancelled, match="stopped after denoising step 1 of 2"):
        WanOrchestrator(tmp_path).generate(
            model, "x", **inputs, video_length=13, sliding_window_size=9, num_inference_steps=2,
            progress=lambda step, total, message: seen.append((step, total, message)),
            should_abort=lambda: any(message.startswith("window 2/2") for *_, message in seen))
    assert [step for step, _, message in seen if message.startswith("window")] == [1, 2, 3]


def test_sliding_windows_on_a_model_that_cannot_continue_a_video_are_refused(sqlite_store, tmp_path):
    (row,) = run_rows(sqlite_store, tmp_path / "out", {"sliding_window_size": 5, "video_length": 9})
    assert row.status is TaskStatus.FAILED
    assert "only wan_vace and wan_i2v models continue a video from its last frames, wan_t2v cannot" \
        in row.error_message


def test_nag_changes_the_video_with_or_without_cfg_and_is_recorded(sqlite_store, tmp_path):
    steps = {"num_inference_steps": 4}
    rows = run_rows(sqlite_store, tmp_path / "out", steps, {**steps, "NAG_scale": 3},
                    {**steps, "guidance_scale": 1}, {**steps, "guidance_scale": 1, "NAG_scale": 3, "NAG_alpha": 1})
    plain, nag, no_cfg, nag_no_cfg = rows
    for row in rows:
        assert row.status is TaskStatus.COMPLETE, row.error_message
        assert read_video(row.output_location).shape[0] == 5
    assert nag.result["normalized_attention_guidance"] == {
        "scale": 3.0, "tau": 3.5, "alpha": 0.5, "cross_attention_layers": 2, "guided_passes": 4}
    assert nag_no_cfg.result["normalized_attention_guidance"]["alpha"] == 1.0
    assert "normalized_attention_guidance" not in plain.result
    for without, guided in ((plain, nag), (no_cfg, nag_no_cfg)):
        difference = np.abs(read_video(guided.output_location).astype(float) - read_video(without.output_location))
        assert difference.mean() > 0.5, difference.mean()


@pytest.fixture
def start_image(tmp_path):
    from PIL import Image

    path = tmp_path / "start.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_image_to_video_windows_continue_from_the_last_frame_with_an_overlap_of_one(sqlite_store, tmp_path,
                                                                                     start_image):
    i2v = {"model": "tiny_i2v", "prompt": "x", "seed": 5, "image_start": start_image, "NAG_scale": 2}
    ids = [sqlite_store.add_task(NewTask("i2v", {**i2v, **extra})) for extra in (
        {"video_length": 9},
        {"video_length": 13, "sliding_window_size": 9},
        {"video_length": 13, "sliding_window_size": 9, "sliding_window_color_correction_strength": 1.0})]
    run_worker_in_process(sqlite_store, tmp_path / "out")
    single, windowed, corrected = (sqlite_store.get_task(i) for i in ids)
    for row in (single, windowed, corrected):
        assert row.status is TaskStatus.COMPLETE, row.error_message
    assert single.result["normalized_attention_guidance"]["cross_attention_layers"] == 2
    report = windowed.result["sliding_windows"]
    # 9 frames, then a window of 5 whose first frame is the 9th: 9 + 4 = 13, exactly.
    assert report["window_frames"] == [9, 5] and report["overlap"] == 1
    assert report["continuation"] == "last frame as the next start image"
    assert windowed.result["adjusted"]["sliding_window_overlap"] == {"requested": 5, "used": 1}
    video = read_video(windowed.output_location)
    assert video.shape[0] == 13 and windowed.result["frames"] == 13
    # The first window is the 9-frame generation itself; colour correction changes only later windows.
    assert np.abs(video[:9].astype(float) - read_video(single.output_location)).mean() < 1
    colour = read_video(corrected.output_location).astype(float)
    assert np.abs(colour[:9] - video[:9]).mean() < 1 and np.abs(colour[9:] - video[9:]).mean() > 1


def test_each_image_to_video_window_starts_from_the_frame_the_previous_one_ended_with(tmp_path, start_image):
    from PIL import Image

    from headless_wgp import WanOrchestrator
    from source.engine.core import Engine

    starts: list = []
    engine = Engine(step_hooks=(lambda params, step: starts.append(params.image_start) if step == 0 else None,))
    result = WanOrchestrator(tmp_path, engine=engine).generate(
        "tiny_i2v", "x", image_start=start_image, video_length=13, sliding_window_size=9, seed=3,
        sliding_window_discard_last_frames=4)
    # Dropping the last 4 frames of the first window: the second starts from its 5th frame (9 + 9 - 4 - 1).
    assert result.applied["sliding_windows"]["window_frames"] == [9, 9]
    assert result.frames == 13
    assert len(starts) == 2 and not isinstance(starts[0], Image.Image) and isinstance(starts[1], Image.Image)
    # Compared with the frames of the video (read as BGR; yuv420 mp4 blurs the tiny model's colour noise).
    video = read_video(result.paths[0]).astype(float)[..., ::-1]
    differences = [np.abs(np.asarray(starts[1], dtype=float) - frame).mean() for frame in video]
    assert differences[4] < 12 and min(differences[:4]) > 25, differences


def test_overlap_noise_changes_only_the_windows_that_continue_and_is_recorded(sqlite_store, tmp_path, long_guide):
    # (tiny_vace_2_2: the one-expert tiny VACE barely passes a change of its context on to the video)
    vace = {"model": "tiny_vace_2_2", "prompt": "x", "seed": 5, "video_guide": long_guide, "video_length": 13,
            "sliding_window_size": 9, "sliding_window_overlap": 5}
    ids = [sqlite_store.add_task(NewTask("vace", {**vace, **extra}))
           for extra in ({}, {"sliding_window_overlap_noise": 100})]
    run_worker_in_process(sqlite_store, tmp_path / "out")
    plain, noised = (sqlite_store.get_task(i) for i in ids)
    for row in (plain, noised):
        assert row.status is TaskStatus.COMPLETE, row.error_message
    # The second window continues 5 frames: latent frames 0 and 1 of its VACE context get the noise.
    assert noised.result["sliding_windows"]["overlap_noise"] == {"strength": 100.0, "latent_frames_noised": [0, 2]}
    assert "overlap_noise" not in plain.result["sliding_windows"]
    before, after = read_video(plain.output_location).astype(float), read_video(noised.output_location)
    assert after.shape[0] == 13
    assert np.abs(after[:9] - before[:9]).mean() < 1
    assert np.abs(after[9:] - before[9:]).mean() > 2


@pytest.mark.parametrize(("params", "message"), [
    ({"sliding_window_overlap_noise": 20}, "params.sliding_window_overlap_noise 20: noise on the overlapped frames "
                                           "goes into VACE's guide; wan_i2v continues from its start image"),
    ({"image_end": "IMAGE"}, "image_end is not supported with sliding windows"),
])
def test_image_to_video_window_settings_it_cannot_take_are_refused(sqlite_store, tmp_path, start_image, params,
                                                                   message):
    params = {key: start_image if value == "IMAGE" else value for key, value in params.items()}
    task = sqlite_store.add_task(NewTask("i2v", {"model": "tiny_i2v", "prompt": "x", "image_start": start_image,
                                                 "video_length": 13, "sliding_window_size": 9, **params}))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.FAILED and message in row.error_message, row.error_message
