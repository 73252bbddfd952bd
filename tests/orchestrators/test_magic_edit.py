"""magic_edit through the local Flux Kontext definition (tiny Kontext, real SQLite, in-process worker)."""

from __future__ import annotations

import cv2
import pytest

from source.db.models import NewTask, TaskStatus
from tests.orchestrators.conftest import run_in_process


def test_magic_edit_edits_the_image_with_tiny_kontext_and_the_default_prompt(sqlite_store, tmp_path, keyframes):
    task_id = sqlite_store.add_task(NewTask("magic_edit", {
        "image_url": keyframes[0], "resolution": "32x32", "seed": 4, "model_name": "tiny_flux_kontext",
    }))
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    image = cv2.imread(row.output_location)
    assert image is not None and image.shape == (32, 32, 3)
    assert row.result["model"] == "tiny_flux_kontext" and row.result["seed"] == 4
    assert row.result["prompt"] == "Make a shot in the same scene from a different angle"
    assert row.result["in_scene_lora"] is None  # in_scene not asked


def make_tiny_flux_lora(folder, name: str):
    """A random LoRA over the tiny Flux Kontext transformer's attention, in diffusers' format."""
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from source.engine.tiny import materialise

    transformer = FluxTransformer2DModel.from_pretrained(materialise("flux_kontext") / "transformer")
    torch.manual_seed(0)
    transformer.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights=False, target_modules=["to_q", "to_k"]))
    folder.mkdir(parents=True, exist_ok=True)
    FluxPipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(transformer),
                                   weight_name=name)
    return folder / name


@pytest.fixture
def lora_root(tmp_path, monkeypatch):
    from source.engine.loras import model_lora_folder

    root = tmp_path / "loras"
    monkeypatch.setenv("WGP_LORA_DIR", str(root))
    return root / model_lora_folder("tiny_flux_kontext")


def _edit(store, tmp_path, keyframes, **extra):
    details = {"image_url": keyframes[0], "resolution": "32x32", "seed": 4, "model_name": "tiny_flux_kontext",
               "in_scene": True, **extra}
    task_id = store.add_task(NewTask("magic_edit", {"orchestrator_details": details}))  # the older nesting
    run_in_process(store, tmp_path / "out")
    return store.get_task(task_id)


def test_in_scene_uses_the_wangp_named_inscene_lora_from_nested_params(sqlite_store, tmp_path, keyframes, lora_root):
    make_tiny_flux_lora(lora_root, "InScene-v1.0.safetensors")
    row = _edit(sqlite_store, tmp_path, keyframes, apply_reward_lora=False)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.result["in_scene_lora"] == "InScene-v1.0.safetensors"
    assert row.result["loras"] == {"InScene-v1.0.safetensors": [1.0]}
    assert row.result["ignored_params"] == ["orchestrator_details.apply_reward_lora"]


def test_in_scene_without_the_lora_fails_saying_where_to_put_it(sqlite_store, tmp_path, keyframes, lora_root):
    row = _edit(sqlite_store, tmp_path, keyframes)
    assert row.status is TaskStatus.FAILED
    assert "params.in_scene is true but" in row.error_message and "InScene-*.safetensors" in row.error_message
    assert "Flux-Kontext-InScene" in row.error_message and "in_scene: false" in row.error_message


def test_a_configured_in_scene_lora_name_is_used_or_the_row_fails(sqlite_store, tmp_path, keyframes, lora_root):
    make_tiny_flux_lora(lora_root, "my_scene.safetensors")
    row = _edit(sqlite_store, tmp_path, keyframes, in_scene_lora="my_scene.safetensors")
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.result["in_scene_lora"] == "my_scene.safetensors"
    missing = _edit(sqlite_store, tmp_path, keyframes, in_scene_lora="other.safetensors")
    assert missing.status is TaskStatus.FAILED and "'other.safetensors' is not in" in missing.error_message


def test_magic_edit_without_an_image_names_the_keys_to_send(sqlite_store, tmp_path):
    task_id = sqlite_store.add_task(NewTask("magic_edit", {"orchestrator_details": {"prompt": "x"}}))
    run_in_process(sqlite_store, tmp_path / "out")
    message = sqlite_store.get_task(task_id).error_message
    assert message.startswith("invalid params: params: Value error, give the image to edit as image_url"), message


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
    from source.orchestrators.magic_edit import DEFAULT_MODEL, DEFAULT_RESOLUTION

    assert load_model_def(DEFAULT_MODEL).architecture == "flux_kontext"
    assert DEFAULT_RESOLUTION == "768x576"


def test_a_large_photo_enters_kontext_at_the_rows_size_and_counts_in_the_work_budget(sqlite_store, tmp_path):
    """Before, the photo went into Flux Kontext at its own size: a 512x600 photo took the tiny model over two
    minutes (64x48: 0.09 s), and the budget counted only the output."""
    import numpy as np

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.random.default_rng(1).integers(0, 256, (600, 512, 3), dtype=np.uint8))
    edit = {"image_path": str(photo), "seed": 1, "model_name": "tiny_flux_kontext"}
    small = sqlite_store.add_task(NewTask("magic_edit", {**edit, "resolution": "64x48"}))
    # the output alone is within the tiny model's 20,000,000 pixel-steps; with the image it reads, it is not
    over = sqlite_store.add_task(NewTask("magic_edit", {**edit, "resolution": "1024x1024", "steps": 10}))
    run_in_process(sqlite_store, tmp_path / "out", task_timeout=60)

    row = sqlite_store.get_task(small)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert cv2.imread(row.output_location).shape == (48, 64, 3)
    refused = sqlite_store.get_task(over)
    assert refused.status is TaskStatus.FAILED
    assert "1024x1024 x (1 frames + 1 input image) x 1 batch x 10 steps is 20,971,520 pixel-steps" in \
        refused.error_message, refused.error_message
