"""Guidance phases on a tiny two-expert model, through a worker: 2- and 3-phase plans split the steps where
asked, switch experts at the phase boundary, guide each phase with its own scale and run each phase's LoRAs in
that phase only (the multipliers the denoiser's LoRA layers held at every step are in the row's result)."""

from __future__ import annotations

import numpy as np
import pytest

from source.db.models import TaskStatus
from tests.generation.test_loras import T2I, image, run_rows
from tests.generation.tiny_lora import make_tiny_wan_lora

MODEL = {"model": "tiny_t2i_2_2", **T2I}


@pytest.fixture(scope="module")
def phase_loras(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phase-lora-src")
    return [make_tiny_wan_lora(folder, name, kind="wan_t2v_2_2", seed=seed) for name, seed in (("hi", 3), ("lo", 4))]


@pytest.fixture
def lora_dir(tmp_path, monkeypatch, phase_loras):
    folder = tmp_path / "loras" / "wan"
    folder.mkdir(parents=True)
    for path in phase_loras:
        (folder / path.name).write_bytes(path.read_bytes())
    monkeypatch.setenv("WGP_LORA_DIR", str(folder.parent))
    return folder


def seen(phase: dict) -> list[dict]:
    return phase["ran"]["lora_multipliers_seen"]


def test_three_phases_switch_where_asked_and_each_phase_runs_only_its_own_loras(sqlite_store, tmp_path, lora_dir):
    three = {**MODEL, "num_inference_steps": 5, "guidance_phases": 3, "steps_per_phase": [2, 1, 2],
             "model_switch_phase": 2, "guidance_scale": 3.0, "guidance2_scale": 1.0, "guidance3_scale": 1.0,
             "activated_loras": ["hi", "lo"], "loras_multipliers": ["0;1;0", "0;0;0.5"]}
    (row,) = run_rows(sqlite_store, tmp_path, [("wan_2_2_t2i", three)])
    assert row.status is TaskStatus.COMPLETE, row.error_message
    plan = row.result["phases"]
    assert plan["steps_per_phase"] == [2, 1, 2] and plan["expert_switch_step"] == 3
    one, two, three_ = plan["phases"]
    assert [p["expert"] for p in plan["phases"]] == ["high_noise", "high_noise", "low_noise"]
    assert [p["ran"]["experts"] for p in plan["phases"]] == [["high_noise"], ["high_noise"], ["low_noise"]]
    assert [p["guidance_scale"] for p in plan["phases"]] == [3.0, 1.0, 1.0]
    # what the LoRA layers held while each step ran: nothing of phase 2's or 3's LoRAs before their phase
    assert seen(one) == [{"hi": 0.0, "lo": 0.0}] * 2
    assert seen(two) == [{"hi": 1.0, "lo": 0.0}]
    assert seen(three_) == [{"hi": 0.0, "lo": 0.5}] * 2
    # only phase 1 guides: two unconditional passes, none in the guidance-1 phases
    assert plan["unconditional_passes"] == 2


def test_two_phase_thresholds_split_as_wangp_and_pad_the_loras_of_a_three_phase_form(
        sqlite_store, tmp_path, lora_dir):
    # tiny_t2v_2_2's 4 unipc steps at shift 3 run timesteps 999, 900, 750, 500 (WanGP: phase 2 starts at
    # the first step whose timestep is at most switch_threshold)
    two = {**MODEL, "num_inference_steps": 4, "guidance_phases": 2, "switch_threshold": 800, "flow_shift": 3.0,
           "guidance_scale": 1.0, "guidance2_scale": 1.0, "activated_loras": ["hi"], "loras_multipliers": "1;0"}
    rows = run_rows(sqlite_store, tmp_path, [
        ("wan_2_2_t2i", two),
        ("wan_2_2_t2i", {**two, "switch_threshold": 950}),
        ("wan_2_2_t2i", {**two, "guidance_phases": 3, "switch_threshold2": 600, "model_switch_phase": 2}),
    ])
    for row in rows:
        assert row.status is TaskStatus.COMPLETE, row.error_message
    at_800, at_950, three = (row.result["phases"] for row in rows)
    assert at_800["steps_per_phase"] == [2, 2] and at_800["expert_switch_step"] == 2
    assert at_950["steps_per_phase"] == [1, 3] and at_950["expert_switch_step"] == 1
    assert [seen(p) for p in at_950["phases"]] == [[{"hi": 1.0}], [{"hi": 0.0}] * 3]
    assert at_800["unconditional_passes"] == 0  # guidance 1 everywhere: no second pass at all
    # "1;0" on three phases with the switch at phase 2: WanGP repeats the first value (1;1;0)
    assert three["steps_per_phase"] == [2, 1, 1] and three["expert_switch_step"] == 3
    assert [p["loras"] for p in three["phases"]] == [{"hi": 1.0}, {"hi": 1.0}, {"hi": 0.0}]
    assert image(rows[0]).shape == image(rows[1]).shape
    assert (image(rows[0]) != image(rows[1])).mean() > 0.01, "where the phase switches changes the image"


def test_phase_guidance_gives_the_same_image_as_the_pipelines_own_expert_guidance(sqlite_store, tmp_path, lora_dir):
    """A 2-phase plan split at the model's own boundary with guidance 4 / 2.5 is the plain two-expert call with
    guidance_scale 4, guidance2_scale 2.5 (the carrier-scale rewrite of the unguided pass is exact up to
    rounding), and a LoRA at 0 in every phase changes nothing."""
    plain = {**MODEL, "num_inference_steps": 4, "guidance_scale": 4.0, "guidance2_scale": 2.5}
    rows = run_rows(sqlite_store, tmp_path, [
        ("wan_2_2_t2i", plain),
        ("wan_2_2_t2i", {**plain, "guidance_phases": 2}),
        ("wan_2_2_t2i", {**plain, "guidance_phases": 2, "activated_loras": ["hi"], "loras_multipliers": "0;0"}),
        ("wan_2_2_t2i", {**plain, "guidance_phases": 2, "guidance2_scale": 1.0}),
    ])
    base, phased, zero_lora, unguided_low = (image(row) for row in rows)
    assert "phases" not in rows[0].result
    assert np.abs(phased - base).max() <= 2
    np.testing.assert_array_equal(zero_lora, phased)
    assert (unguided_low != phased).mean() > 0.05


def test_a_ramp_inside_a_phase_is_spread_over_its_steps_as_wangp_does(sqlite_store, tmp_path, lora_dir):
    """Reigh's phase editor allows "0.1,0.3,0.5" ramps: WanGP gives step i of a phase of s steps the value
    int(i * n / s) of the n values; the LoRA layers held exactly those."""
    ramp = {**MODEL, "num_inference_steps": 5, "steps_per_phase": [3, 2], "guidance_scale": 1.0,
            "guidance2_scale": 1.0, "activated_loras": ["hi"], "loras_multipliers": ["0,0.5,1;0.25,0.75"]}
    (row,) = run_rows(sqlite_store, tmp_path, [("wan_2_2_t2i", ramp)])
    assert row.status is TaskStatus.COMPLETE, row.error_message
    one, two = row.result["phases"]["phases"]
    assert one["loras"] == {"hi": [0.0, 0.5, 1.0]} and two["loras"] == {"hi": [0.25, 0.75]}
    assert seen(one) == [{"hi": 0.0}, {"hi": 0.5}, {"hi": 1.0}]
    assert seen(two) == [{"hi": 0.25}, {"hi": 0.75}]


@pytest.mark.parametrize(("params", "message"), [
    ({"guidance_phases": 3, "steps_per_phase": [1, 1]}, "has 2 phases but guidance_phases is 3"),
    ({"steps_per_phase": [1, 1, 1], "num_inference_steps": 4}, "sums to 3, but num_inference_steps is 4"),
    ({"guidance_phases": 3, "switch_threshold": 900}, "needs switch_threshold2"),
    ({"guidance_phases": 2, "loras_multipliers": "1;0;0", "activated_loras": ["hi"]}, "has 3 phases"),
    ({"loras_multipliers": "1;0;0", "activated_loras": ["hi"]}, "need guidance_phases 3"),
    ({"guidance_phases": 2, "cfg_star_switch": 1}, "cfg_star_switch cannot be combined with guidance phases"),
    ({"guidance_phases": 4}, "guidance_phases must be one of 1, 2, 3"),
    ({"loras_multipliers": ["1,0.5"], "activated_loras": ["hi"]}, "per-step ramps need guidance phases"),
])
def test_bad_phase_plans_fail_the_row_naming_the_setting(sqlite_store, tmp_path, lora_dir, params, message):
    (row,) = run_rows(sqlite_store, tmp_path, [("wan_2_2_t2i", {**MODEL, **params})])
    assert row.status is TaskStatus.FAILED
    assert message in row.error_message


def test_reighs_phase_config_becomes_the_flat_plan_and_one_additional_lora_per_url():
    from source.generation.conversion import db_task_to_generation_task

    config = {"num_phases": 2, "steps_per_phase": [2, 3], "flow_shift": 5.0, "sample_solver": "euler",
              "model_switch_phase": 1, "phases": [
                  {"phase": 1, "guidance_scale": 3.0, "loras": [{"url": "https://h/hi.safetensors", "multiplier": "0.5,1"},
                                                                {"url": "", "multiplier": "1"}]},
                  {"phase": 2, "guidance_scale": 1.0, "loras": [{"url": "https://h/lo.safetensors", "multiplier": "1.0"}]}]}
    request = db_task_to_generation_task("t", "wan_2_2_t2i", {**MODEL, "guidance_scale": 7.0, "phase_config": config})
    p = request.parameters
    assert (p["guidance_phases"], p["steps_per_phase"], p["num_inference_steps"]) == (2, (2, 3), 5)
    assert (p["guidance_scale"], p["guidance2_scale"], p["flow_shift"], p["sample_solver"]) == (3.0, 1.0, 5.0, "euler")
    assert dict(request.additional_loras) == {"https://h/hi.safetensors": ((0.5, 1.0), 0.0),
                                              "https://h/lo.safetensors": (0.0, 1.0)}
    assert request.model_phase_loras is False
