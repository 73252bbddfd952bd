"""wgp.generate_video on every tiny family: real pipelines, real files, read back with OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import wgp
from source.errors import InvalidParams, ModelUnavailable, TaskCancelled


def read_video(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return np.stack(frames) if frames else np.zeros((0,))


def generate(tmp_path, model_type, **params):
    state = {"gen": {"file_list": []}}
    params.setdefault("prompt", "a red cat dances on the beach")
    params.setdefault("seed", 11)
    result = wgp.generate_video(state, model_type, output_dir=tmp_path, **params)
    assert state["gen"]["file_list"] == [str(p) for p in result.paths]
    return result


@pytest.mark.parametrize(
    ("model_type", "frames", "size", "extra"),
    [
        ("tiny_t2v", 9, (48, 32), {"resolution": "48x32", "video_length": 9}),
        ("tiny_t2v_2_2", 5, (32, 32), {}),
        ("tiny_hunyuan", 5, (32, 32), {}),
        ("tiny_ltxv", 9, (32, 32), {}),
    ],
)
def test_text_to_video_families_write_an_mp4_with_the_requested_frames_and_size(tmp_path, model_type, frames, size, extra):
    result = generate(tmp_path, model_type, **extra)
    [path] = result.paths
    assert path.suffix == ".mp4" and path.parent == tmp_path
    video = read_video(path)
    assert video.shape == (frames, size[1], size[0], 3)
    assert result.frames == frames and (result.width, result.height) == size


def test_image_to_video_starts_from_image_start_and_accepts_image_end(tmp_path, still_image):
    for model_type, extra in (("tiny_i2v", {}), ("tiny_i2v_2_2", {"image_end": str(still_image)})):
        result = generate(tmp_path, model_type, image_start=str(still_image), **extra)
        assert read_video(result.paths[0]).shape == (5, 32, 32, 3)


def test_image_to_video_without_a_start_image_is_a_clear_error(tmp_path):
    # the prepare stage's check, the same as a row's (source/generation/prepare.py)
    with pytest.raises(InvalidParams, match="is image-to-video: params.image_start is required"):
        generate(tmp_path, "tiny_i2v")


def test_vace_uses_guide_mask_and_reference_images(tmp_path, still_image, guide_video, mask_video):
    plain = generate(tmp_path, "tiny_vace", video_guide=str(still_image))
    guided = generate(tmp_path, "tiny_vace", video_guide=str(guide_video), video_mask=str(mask_video),
                      image_refs=[str(still_image)])
    second = generate(tmp_path, "tiny_vace", video_guide=str(guide_video), video_mask=str(mask_video),
                      video_guide2=str(still_image), video_mask2=str(mask_video))
    a, b, c = (read_video(r.paths[0]).astype(int) for r in (plain, guided, second))
    assert a.shape == b.shape == c.shape == (5, 32, 32, 3)
    assert np.abs(a - b).mean() > 0.5  # the guide, mask and references change the result
    assert np.abs(b - c).mean() > 0.5  # and so does the second pair


def test_vace_mask_without_guide_is_refused(tmp_path, mask_video):
    with pytest.raises(InvalidParams, match="is a VACE model: params.video_guide is required"):
        generate(tmp_path, "tiny_vace", video_mask=str(mask_video))


def test_flux_writes_video_length_images_and_kontext_edits_an_image(tmp_path, still_image):
    result = generate(tmp_path, "tiny_flux", video_length=3)
    assert len(result.paths) == 3 and all(p.suffix == ".png" for p in result.paths)
    assert cv2.imread(str(result.paths[0])).shape == (32, 32, 3)
    edited = generate(tmp_path, "tiny_flux_kontext", image_start=str(still_image))
    assert cv2.imread(str(edited.paths[0])).shape == (32, 32, 3)


def test_wan_2_2_text_to_image_writes_a_single_png(tmp_path):
    result = generate(tmp_path, "tiny_t2i_2_2")
    [path] = result.paths
    assert path.suffix == ".png" and cv2.imread(str(path)).shape == (32, 32, 3)


def test_same_seed_same_output_and_random_seed_is_recorded_and_reproducible(tmp_path):
    first = read_video(generate(tmp_path, "tiny_t2v", seed=5).paths[0])
    again = read_video(generate(tmp_path, "tiny_t2v", seed=5).paths[0])
    other = read_video(generate(tmp_path, "tiny_t2v", seed=6).paths[0])
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    random_run = generate(tmp_path, "tiny_t2v", seed=-1)
    assert random_run.seed >= 0
    replay = generate(tmp_path, "tiny_t2v", seed=random_run.seed)
    assert np.array_equal(read_video(random_run.paths[0]), read_video(replay.paths[0]))


def test_three_tiers_model_settings_override_system_defaults_and_params_override_both(tmp_path):
    defaults = wgp.get_default_settings("tiny_t2v")
    assert defaults["num_inference_steps"] == 2  # model JSON, over the system's 30
    assert defaults["sample_solver"] == "unipc" and defaults["control_net_weight"] == 1.0  # system
    reports: list[tuple[int, str]] = []
    result = generate(tmp_path, "tiny_t2v", num_inference_steps=3,
                      progress_callback=lambda s, t, m: reports.append((t, m)))
    # one report per denoising step (the last one says the VAE decode follows), besides the phase reports
    steps = [total for total, phase in reports if phase in ("denoising", "decoding")]
    assert result.steps == 3 and steps == [3, 3, 3]
    assert result.parameter_sources["num_inference_steps"] == "task"
    assert result.parameter_sources["resolution"] == "model"
    assert result.parameter_sources["control_net_weight"] == "system"


def test_wan_2_2_runs_both_experts(tmp_path):
    state = {"gen": {"file_list": []}}
    wgp.load_models("tiny_t2v_2_2", state)
    pipe = wgp.engine_of(state).resident.pipe
    calls = {"high": 0, "low": 0}
    hooks = [pipe.transformer.register_forward_hook(lambda *a: calls.__setitem__("high", calls["high"] + 1)),
             pipe.transformer_2.register_forward_hook(lambda *a: calls.__setitem__("low", calls["low"] + 1))]
    try:
        wgp.generate_video(state, "tiny_t2v_2_2", output_dir=tmp_path, prompt="x", num_inference_steps=4)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls["high"] > 0 and calls["low"] > 0, calls


def test_progress_is_reported_each_step_and_abort_stops_generation(tmp_path):
    seen = []
    state = {"gen": {"file_list": [], "should_abort": lambda: len(seen) >= 2}}
    with pytest.raises(TaskCancelled, match="stopped after denoising step 2"):
        wgp.generate_video(state, "tiny_t2v", output_dir=tmp_path, prompt="x", num_inference_steps=5,
                           progress_callback=lambda step, total, msg: msg == "denoising" and seen.append((step, total)))
    assert seen == [(1, 5), (2, 5)]
    assert state["gen"]["file_list"] == []


def test_loading_a_model_keeps_it_resident_until_another_is_asked_for():
    state: dict = {}
    wgp.load_models("tiny_t2v", state)
    assert wgp.load_models("tiny_t2v", state) is False
    assert wgp.load_models("tiny_flux", state) is True
    assert wgp.engine_of(state).model_type == "tiny_flux"
    assert wgp.engine_of({}).model_type is None  # another state, another engine: nothing shared
    wgp.unload_model_if_needed(state)
    assert wgp.engine_of(state).model_type is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"resolution": "big"}, "resolution must look like 'WIDTHxHEIGHT'"),
        ({"video_length": -3}, "video_length must be a positive integer"),
        ({"sample_solver": "magic"}, "sample_solver 'magic' is not a known solver"),
        ({"seed": "abc"}, "seed must be an integer"),
        ({"num_inference_steps": 0}, "num_inference_steps must be a positive integer"),
    ],
)
def test_bad_parameters_are_clear_errors(tmp_path, params, message):
    with pytest.raises(InvalidParams, match=message):
        generate(tmp_path, "tiny_t2v", **params)


def test_a_size_and_length_the_model_cannot_make_are_rounded_as_wangp_does_and_recorded(tmp_path):
    result = generate(tmp_path, "tiny_t2v", resolution="30x34", video_length=8, num_inference_steps=2)
    assert (result.width, result.height, result.frames) == (32, 32, 9)
    assert result.summary()["adjusted"] == {"resolution": {"requested": "30x34", "used": "32x32"},
                                            "video_length": {"requested": 8, "used": 9}}
    assert len(read_video(result.paths[0])) == 9


def test_unknown_model_type_lists_the_known_ones(tmp_path):
    with pytest.raises(InvalidParams, match="unknown model_type 'nope'; known model types: .*tiny_t2v"):
        generate(tmp_path, "nope")


def test_missing_real_weights_offline_name_the_repo_and_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(ModelUnavailable) as info:
        generate(tmp_path, "t2v_1.3B")
    message = str(info.value)
    assert "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in message and "~29 GB" in message
    assert "tasks prefetch t2v_1.3B" in message


def test_every_real_definition_loads_and_inherits():
    for model_type in ("t2v", "t2v_1.3B", "t2v_2_2", "i2v", "i2v_2_2", "vace_14B", "vace_1.3B",
                       "vace_14B_cocktail_2_2", "flux", "flux_kontext", "hunyuan", "ltxv_13B"):
        definition = wgp.get_model_def(model_type)
        assert definition.weights.repo, model_type
    assert wgp.get_model_def("vace_1.3B").architecture == "wan_vace"  # inherited from vace_14B
    assert wgp.get_default_settings("vace_1.3B")["flow_shift"] == 3.0
    assert "tiny_t2v" in wgp.list_model_types()


def test_the_orchestrator_generates_programmatically_with_the_model_tier_filling_in(tmp_path, guide_video):
    from headless_wgp import WanOrchestrator

    orchestrator = WanOrchestrator(tmp_path)
    video = orchestrator.generate_t2v("tiny_t2v", "a cat", seed=2, steps=3, sharpen=True)
    assert video.parameter_sources["negative_prompt"] == "model" and video.steps == 3
    assert video.ignored_params == ("sharpen",)
    assert video.paths[0].parent == tmp_path
    images = orchestrator.generate_flux("tiny_flux", "a cat", num_images=2)
    assert len(images.paths) == 2 and orchestrator.current_model == "tiny_flux"
    guided = orchestrator.generate_vace("tiny_vace", "a cat", video_guide=str(guide_video), video_prompt_type="V")
    assert guided.parameters["video_prompt_type"] == "V"
    with pytest.raises(InvalidParams, match="not a VACE model"):
        orchestrator.generate_vace("tiny_t2v", "a cat", video_guide=str(guide_video))
