"""magic_edit through the local Flux Kontext definition (tiny Kontext, real SQLite, in-process worker)."""

from __future__ import annotations

import cv2
import pytest

from source.db.models import NewTask, TaskStatus
from tests.orchestrators.conftest import run_in_process


def test_magic_edit_edits_the_image_with_tiny_kontext_and_the_default_prompt(sqlite_store, tmp_path, keyframes):
    task_id = sqlite_store.add_task(NewTask("magic_edit", {
        "image_url": keyframes[0], "resolution": "32x32", "seed": 4, "model_name": "tiny_flux_kontext",
        "in_scene": True,
    }))
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    image = cv2.imread(row.output_location)
    assert image is not None and image.shape == (32, 32, 3)
    assert row.result["model"] == "tiny_flux_kontext" and row.result["seed"] == 4
    assert row.result["prompt"] == "Make a shot in the same scene from a different angle"
    assert row.result["in_scene_lora"] is None  # no in-scene LoRA file in the tiny model's folder


@pytest.mark.parametrize(("params", "message"), [
    ({"prompt": "x"}, "give the image to edit as image_url"),
    ({"image_url": "/no/such.png", "model": "tiny_flux_kontext", "resolution": "32x32"},
     "params.image_start: file not found: /no/such.png"),
    ({"image_url": "IMAGE", "model": "tiny_flux"}, "'tiny_flux' is a flux model; magic_edit (image editing) needs"),
    ({"image_url": "IMAGE", "model": "tiny_flux_kontext", "resolution": "big"}, "must look like 'WIDTHxHEIGHT'"),
])
def test_bad_magic_edit_params_fail_with_a_clear_error(sqlite_store, tmp_path, keyframes, params, message):
    params = {k: keyframes[0] if v == "IMAGE" else v for k, v in params.items()}
    task_id = sqlite_store.add_task(NewTask("magic_edit", params))
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED and message in row.error_message, row.error_message


def test_default_model_is_the_real_kontext_definition():
    from source.engine.model_defs import load_model_def
    from source.sm_functions.magic_edit import DEFAULT_MODEL, DEFAULT_RESOLUTION

    assert load_model_def(DEFAULT_MODEL).architecture == "flux_kontext"
    assert DEFAULT_RESOLUTION == "768x576"
