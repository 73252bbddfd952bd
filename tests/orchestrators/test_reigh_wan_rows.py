"""Wan rows as Reigh builds them (banodoco/reigh-app at 3a6fd3d, supabase/functions/create-task/resolvers:
travelBetweenImages.ts, individualTravelSegment.ts, imageGeneration.ts; phase configs from
src/shared/types/phaseConfig.ts), through a worker, with the models they name swapped for tiny definitions of
the same shape and the phase configs' hub LoRA URLs for a local server holding tiny LoRAs. Every row completes
with ``result.phases`` showing the phases that ran."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from functools import partial

import pytest

from source.db.models import NewTask, TaskStatus
from source.generation.wangp_parameters import WANGP_PARAMETERS
from tests.generation.tiny_lora import make_tiny_wan_lora
from tests.helpers import run_worker
from tests.orchestrators.conftest import SIZE, run_in_process

pytestmark = pytest.mark.slow

I2V_MODEL = "wan_2_2_i2v_lightning_baseline_2_2_2"
# The real names resolve to tiny definitions of the same family shape and phase plan.
SWAPPED = {I2V_MODEL: "tiny_wan_2_2_i2v_lightning", "wan_2_2_vace_lightning_baseline_2_2_2": "tiny_wan_2_2_vace_lightning",
           "optimised-t2i": "tiny_optimised-t2i"}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def tiny_loras(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reigh-loras")
    made = {name: make_tiny_wan_lora(folder, name, kind=kind, seed=seed) for name, kind, seed in (
        ("tiny_lightning_i2v_high", "wan_i2v_2_2", 11), ("tiny_lightning_i2v_low", "wan_i2v_2_2", 12),
        ("tiny_lightning_t2v_high", "wan_t2v_2_2", 13), ("tiny_lightning_t2v_low", "wan_t2v_2_2", 14))}
    return made


@pytest.fixture
def reigh_env(tmp_path, monkeypatch, tiny_loras):
    """Definitions under the names Reigh rows use, the tiny LoRAs in the LoRA folder, and a server for URLs."""
    from source.engine.paths import defaults_dir

    defaults = tmp_path / "defaults"
    shutil.copytree(defaults_dir(), defaults)
    for name, tiny in SWAPPED.items():
        (defaults / f"{name}.json").write_text(json.dumps({"parent": tiny, "name": f"{name} (tiny)"}))
    monkeypatch.setenv("WGP_DEFAULTS_DIR", str(defaults))
    loras = tmp_path / "loras" / "wan"
    loras.mkdir(parents=True)
    for path in tiny_loras.values():
        shutil.copy(path, loras / path.name)
    monkeypatch.setenv("WGP_LORA_DIR", str(loras.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(loras)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def i2v_phase_config(base: str) -> dict:
    """Reigh's DEFAULT_PHASE_CONFIG (I2V, basic mode), its Comfy-Org LoRA URLs swapped for the local server."""
    return {"num_phases": 2, "steps_per_phase": [3, 3], "flow_shift": 5.0, "sample_solver": "euler",
            "model_switch_phase": 1, "phases": [
                {"phase": 1, "guidance_scale": 1.0,
                 "loras": [{"url": f"{base}/tiny_lightning_i2v_high.safetensors", "multiplier": "1.2"}]},
                {"phase": 2, "guidance_scale": 1.0,
                 "loras": [{"url": f"{base}/tiny_lightning_i2v_low.safetensors", "multiplier": "1.0"}]}]}


def vace_phase_config(base: str) -> dict:
    """Reigh's DEFAULT_VACE_PHASE_CONFIG (3 phases, lightx2v T2V LoRAs), URLs swapped."""
    high, low = f"{base}/tiny_lightning_t2v_high.safetensors", f"{base}/tiny_lightning_t2v_low.safetensors"
    return {"num_phases": 3, "steps_per_phase": [2, 2, 2], "flow_shift": 5.0, "sample_solver": "euler",
            "model_switch_phase": 2, "mode": "vace", "phases": [
                {"phase": 1, "guidance_scale": 3.0, "loras": [{"url": high, "multiplier": "0.75"}]},
                {"phase": 2, "guidance_scale": 1.0, "loras": [{"url": high, "multiplier": "1.0"}]},
                {"phase": 3, "guidance_scale": 1.0, "loras": [{"url": low, "multiplier": "1.0"}]}]}


def reigh_travel(images: list[str], **overrides) -> dict:
    """buildTravelBetweenImagesPayload's orchestrator_details for ``images`` (basic mode, batch generation)."""
    count = len(images) - 1
    details = {
        "generation_source": "batch", "orchestrator_task_id": "sm_travel_orchestrator_ab12", "run_id": "run-reigh",
        "input_image_paths_resolved": images, "num_new_segments_to_generate": count,
        "base_prompts_expanded": ["a red room turns green", *[""] * (count - 1)], "base_prompt": "a slow journey",
        "negative_prompts_expanded": [""] * count, "segment_frames_expanded": [5] * count,
        "frame_overlap_expanded": [1] * count, "parsed_resolution_wh": f"{SIZE}x{SIZE}", "model_name": I2V_MODEL,
        "seed_base": 789, "steps": 20, "after_first_post_generation_saturation": 1,
        "after_first_post_generation_brightness": 0, "debug_mode_enabled": False, "shot_id": "shot-1",
        "enhance_prompt": False, "show_input_images": True, "generation_mode": "batch", "dimension_source": "project",
        "amount_of_motion": 0.5, "advanced_mode": False, "independent_segments": True, "motion_mode": "basic",
    }
    details.update(overrides)
    return {"tool_type": "travel-between-images", "orchestrator_details": details, "parent_generation_id": "gen-1"}


def segments(store, parent_id):
    rows = [row for row in store.list_child_tasks(parent_id) if row.task_type == "travel_segment"]
    return sorted(rows, key=lambda row: row.params()["segment_index"])


def finished(store, task_id):
    row = store.get_task(task_id)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    return row


def test_reighs_default_i2v_travel_runs_each_segment_as_image_to_video_with_its_phase_config(
        sqlite_store, tmp_path, keyframes, reigh_env):
    task = sqlite_store.add_task(NewTask("travel_orchestrator", reigh_travel(
        keyframes, phase_config=i2v_phase_config(reigh_env))))
    # a worker.py process, as an operator runs it (the environment carries the swapped definitions)
    done = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--input-roots", str(tmp_path),
                      "--allow-private-urls", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    row = finished(sqlite_store, task)
    assert row.result["mode"] == "i2v" and row.result["model"] == I2V_MODEL
    assert row.result["reigh"]["amount_of_motion"] == 0.5
    first, second = segments(sqlite_store, task)
    for segment in (first, second):
        result = finished(sqlite_store, segment.id).result
        phases = result["phases"]
        assert phases["steps_per_phase"] == [3, 3] and phases["expert_switch_step"] == 3
        high, low = phases["phases"]
        assert [high["expert"], low["expert"]] == ["high_noise", "low_noise"]
        (high_name, low_name) = high["loras"]
        assert "tiny_lightning_i2v_high" in high_name and "tiny_lightning_i2v_low" in low_name
        assert high["loras"] == {high_name: 1.2, low_name: 0.0} and low["loras"] == {high_name: 0.0, low_name: 1.0}
        assert all(seen == {high_name: 1.2, low_name: 0.0} for seen in high["ran"]["lora_multipliers_seen"])
        assert result["started_from"] == "start image"
        assert result["parameters"]["image_end"].endswith(".png")
    # the second pair's empty prompt is the shot's base prompt
    assert second.params()["base_prompt"] == "a slow journey"
    assert row.output_location.endswith(".mp4")


def test_vace_travel_naming_the_i2v_model_runs_its_vace_sibling_with_three_phases(
        sqlite_store, tmp_path, keyframes, reigh_env):
    task = sqlite_store.add_task(NewTask("travel_orchestrator", reigh_travel(
        keyframes[:2], model_type="vace", phase_config=vace_phase_config(reigh_env))))
    run_in_process(sqlite_store, tmp_path / "out", allow_private_urls=True)
    row = finished(sqlite_store, task)
    assert row.result["model_swapped"] == {"requested": I2V_MODEL, "used": "wan_2_2_vace_lightning_baseline_2_2_2",
                                           "reason": "model_type vace: the VACE sibling"}
    (segment,) = segments(sqlite_store, task)
    phases = finished(sqlite_store, segment.id).result["phases"]
    assert phases["steps_per_phase"] == [2, 2, 2] and phases["expert_switch_step"] == 4
    assert [p["guidance_scale"] for p in phases["phases"]] == [3.0, 1.0, 1.0]
    assert phases["unconditional_passes"] == 2


def test_turbo_wan_2_2_i2v_runs_the_definitions_own_lightning_phases_and_chains_from_the_last_frame(
        sqlite_store, tmp_path, keyframes, reigh_env):
    task = sqlite_store.add_task(NewTask("wan_2_2_i2v", reigh_travel(keyframes, independent_segments=False)))
    run_in_process(sqlite_store, tmp_path / "out")
    row = finished(sqlite_store, task)
    assert row.result["chained_from_last_frame"] is True
    assert row.result["steps_not_applied"]["steps"] == 20  # Reigh's UI count, not diffusion steps
    first, second = (finished(sqlite_store, s.id).result for s in segments(sqlite_store, task))
    assert first["started_from"] == "start image" and second["started_from"] == "previous segment's last frame"
    # no phase_config: the definition's 2-phase plan (threshold 800 over 4 euler steps) and its LoRAs by name
    phases = first["phases"]
    assert phases["steps_per_phase"] == [2, 2]
    assert phases["phases"][0]["loras"] == {"tiny_lightning_i2v_high": 1.2, "tiny_lightning_i2v_low": 0.0}
    assert phases["phases"][1]["loras"] == {"tiny_lightning_i2v_high": 0.0, "tiny_lightning_i2v_low": 1.0}


def test_individual_travel_segment_regenerates_one_segment_and_names_its_gallery_links(
        sqlite_store, tmp_path, keyframes, reigh_env):
    """buildIndividualTravelSegmentParams for a frontend-created regeneration (trimmed to what it sets)."""
    base = reigh_env
    phase_config = i2v_phase_config(base)
    details = {"generation_source": "individual_segment", "parsed_resolution_wh": f"{SIZE}x{SIZE}",
               "input_image_paths_resolved": keyframes[:2], "seed_base": 5, "model_name": I2V_MODEL,
               "flow_shift": 5, "sample_solver": "euler", "guidance_scale": 1, "guidance2_scale": 1,
               "guidance_phases": 2, "num_inference_steps": 6, "model_switch_phase": 1, "additional_loras": {},
               "advanced_mode": True, "motion_mode": "advanced", "amount_of_motion": 0.5,
               "parent_generation_id": "gen-1", "fps_helpers": 16, "independent_segments": True,
               "chain_segments": False}
    params = {
        "flow_shift": 5, "lora_names": [], "model_name": I2V_MODEL, "project_id": "p-1", "shot_id": "shot-1",
        "base_prompt": "", "fps_helpers": 16, "seed_to_use": 5, "cfg_zero_step": -1, "sample_solver": "euler",
        "segment_index": 1, "guidance_scale": 1, "cfg_star_switch": 0, "guidance2_scale": 1, "guidance_phases": 2,
        "is_last_segment": False, "negative_prompt": "", "is_first_segment": False, "additional_loras": {},
        "lora_multipliers": [{"url": lora["url"], "multiplier": float(lora["multiplier"])}
                             for phase in phase_config["phases"] for lora in phase["loras"]],
        "model_switch_phase": 1, "num_inference_steps": 6, "parsed_resolution_wh": f"{SIZE}x{SIZE}",
        "num_frames": 10, "amount_of_motion": 0.5, "orchestrator_details": details,
        "parent_generation_id": "gen-1", "child_generation_id": "child-7", "input_image_paths_resolved": keyframes[:2],
        "after_first_post_generation_saturation": 1, "after_first_post_generation_brightness": 0,
        "motion_mode": "advanced", "pair_shot_generation_id": "pair-3", "make_primary_variant": True,
        "contract_version": 1,
        "individual_segment_params": {
            "input_image_paths_resolved": keyframes[1:3], "start_image_url": keyframes[1],
            "end_image_url": keyframes[2], "base_prompt": "the green room turns blue", "negative_prompt": "",
            "num_frames": 10, "seed_to_use": 5, "random_seed": False, "amount_of_motion": 0.5,
            "motion_mode": "advanced", "advanced_mode": True, "additional_loras": {},
            "after_first_post_generation_saturation": 1, "after_first_post_generation_brightness": 0,
            "phase_config": phase_config, "pair_shot_generation_id": "pair-3"},
    }
    task = sqlite_store.add_task(NewTask("individual_travel_segment", params))
    run_in_process(sqlite_store, tmp_path / "out", allow_private_urls=True)
    row = finished(sqlite_store, task)
    result = row.result
    assert result["reigh_links"] == {"parent_generation_id": "gen-1", "child_generation_id": "child-7",
                                     "pair_shot_generation_id": "pair-3", "shot_id": "shot-1",
                                     "make_primary_variant": True, "contract_version": 1}
    assert result["adjusted_segment"] == {"num_frames": {"requested": 10, "used": 9}}
    assert result["parameters"]["prompt"] == "the green room turns blue"
    assert result["phases"]["steps_per_phase"] == [3, 3]
    assert row.output_location.endswith(".mp4") and result["frames"] == 9
    # Reigh's bookkeeping keys are listed; no WanGP parameter is (cfg_zero_step, guidance_phases, ... ran)
    assert "project_id" in result["ignored_params"]
    assert not {key.split(".")[-1] for key in result["ignored_params"]} & set(WANGP_PARAMETERS)


def test_wan_2_2_t2i_with_optimised_t2i_makes_one_image_with_the_lightning_phases(
        sqlite_store, tmp_path, reigh_env):
    """imageGeneration.ts's buildTaskParams for the default model (no LoRAs, no references)."""
    params = {"task_id": "wan_2_2_t2i_ab12", "model": "optimised-t2i", "prompt": "a lighthouse at dusk",
              "resolution": f"{SIZE}x{SIZE}", "seed": 11111, "steps": 4, "add_in_position": False}
    task = sqlite_store.add_task(NewTask("wan_2_2_t2i", params))
    run_in_process(sqlite_store, tmp_path / "out")
    row = finished(sqlite_store, task)
    assert row.output_location.endswith(".png")
    phases = row.result["phases"]
    assert phases["count"] == 2 and sum(phases["steps_per_phase"]) == 4
    assert phases["phases"][0]["loras"] == {"tiny_lightning_t2v_high": 1.0, "tiny_lightning_t2v_low": 0.0}


@pytest.mark.parametrize(("override", "message"), [
    ({"use_svi": True}, "use_svi: SVI latent chaining"),
    ({"travel_guidance": {"mode": "flow"}}, "travel_guidance: structure guidance videos"),
    ({"enhance_prompt": True}, "enhance_prompt: prompt enhancement needs a vision-language model"),
    ({"base_prompts_expanded": ["", ""], "base_prompt": ""}, "base_prompts_expanded[0] is empty"),
    ({"model_type": "i2v", "model_name": "tiny_vace"}, "is a VACE model but model_type is \"i2v\""),
])
def test_reigh_travel_settings_not_run_here_fail_naming_them(sqlite_store, tmp_path, keyframes, reigh_env,
                                                            override, message):
    task = sqlite_store.add_task(NewTask("travel_orchestrator", reigh_travel(keyframes, **override)))
    run_in_process(sqlite_store, tmp_path / "out", max_tasks=1)
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.FAILED and message in row.error_message, row.error_message
