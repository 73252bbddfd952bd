"""Every WanGP parameter is honoured, translated or refused (one table, the docs generated from it): a row
giving one this worker does not run fails naming it, one at WanGP's "off" runs, and only keys no WanGP version
defines end in ignored_params."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from source.db.models import NewTask, TaskStatus
from source.engine.params import PARSERS
from source.generation.conversion import db_task_to_generation_task
from source.generation.wangp_parameters import (
    WANGP_GENERATE_MEDIA,
    WANGP_PARAMETERS,
    State,
    markdown_table,
)
from tests.generation.test_generation_tasks import run_worker_in_process

DOC = Path(__file__).resolve().parents[2] / "docs" / "generation-parameters.md"
T2I = {"model": "tiny_t2i_2_2", "prompt": "a lighthouse", "seed": 3, "num_inference_steps": 2}


def test_the_docs_table_is_the_code_table_and_every_wangp_parameter_has_a_state():
    text = DOC.read_text()
    generated = re.search(r"<!-- wangp-table:start -->\n(.*)\n<!-- wangp-table:end -->", text, re.S)
    assert generated, "docs/generation-parameters.md lost its generated table markers"
    assert generated.group(1) == markdown_table(), "regenerate: python -m source.generation.wangp_parameters"
    assert set(WANGP_GENERATE_MEDIA) <= set(WANGP_PARAMETERS)
    for name in PARSERS:
        if name in WANGP_PARAMETERS:
            assert WANGP_PARAMETERS[name].state is State.HONOURED


def convert(params):
    return db_task_to_generation_task("t", "wan_2_2_t2i", {**T2I, **params})


def test_perturbation_names_are_wangps_skip_layer_guidance_and_image_prompt_type_selects_the_images():
    request = convert({"perturbation_switch": 1, "perturbation_layers": [1], "perturbation_start_perc": 20})
    assert (request.parameters["slg_switch"], request.parameters["slg_layers"]) == (1, (1,))
    assert request.parameters["slg_start_perc"] == 20.0 and request.ignored_params == ()
    chosen = db_task_to_generation_task("t", "i2v_22", {**T2I, "image_start": "a.png", "image_end": "b.png",
                                                        "image_prompt_type": "S"})
    assert chosen.parameters["image_start"] == "a.png" and "image_end" not in chosen.parameters


@pytest.mark.parametrize(("params", "message"), [
    ({"repeat_generation": 3}, "params.repeat_generation 3: one row makes one generation"),
    ({"video_source": "clip.mp4"}, "params.video_source 'clip.mp4': continuing a video"),
    ({"override_profile": 4}, "params.override_profile 4: the memory profile is the worker's"),
    ({"masking_strength": 0.6}, "params.masking_strength 0.6: partial mask strength"),
    ({"image_prompt_type": "SV"}, "params.image_prompt_type 'SV': only S (image_start) and E"),
    ({"use_uni3c": True}, "params.use_uni3c True: Uni3C camera/motion guidance is not implemented"),
])
def test_a_wangp_parameter_this_worker_does_not_run_fails_the_row_naming_it(sqlite_store, tmp_path, params, message):
    task = sqlite_store.add_task(NewTask("wan_2_2_t2i", {**T2I, **params}))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.FAILED and message in row.error_message, row.error_message


def test_wangp_parameters_at_their_off_value_run_and_only_unknown_keys_are_ignored(sqlite_store, tmp_path):
    at_off = {"repeat_generation": 1, "masking_strength": 1.0, "override_profile": -1, "mask_expand": 0,
              "remove_background_images_ref": False, "multi_prompts_gen_type": 0, "force_fps": "",
              "model_type": "t2v_2_2", "image_prompt_type": ""}
    task = sqlite_store.add_task(NewTask("wan_2_2_t2i", {**T2I, **at_off, "shot_id": "s-1"}))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.result["ignored_params"] == ["shot_id"]
