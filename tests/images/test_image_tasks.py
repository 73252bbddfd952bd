"""Reigh's image task types through a worker (real SQLite, tiny real pipelines): each row as Reigh's builders
make it, with the model swapped for its tiny counterpart; the outputs checked the way a user would look."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from source.db.models import NewTask, TaskStatus
from tests.images.conftest import (
    SIZE,
    image_generation_row,
    magic_edit_row,
    masked_edit_row,
    upscale_row,
    z_image_i2i_row,
)
from tests.orchestrators.conftest import run_in_process


def _run(store, tmp_path: Path, task_type: str, params: dict):
    task_id = store.add_task(NewTask(task_type, params))
    run_in_process(store, tmp_path / "out")
    return store.get_task(task_id)


def _done(row):
    assert row.status is TaskStatus.COMPLETE, row.error_message
    return [Path(p) for p in row.result["outputs"]]


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=int)


@pytest.mark.parametrize(("task_type", "model"), [("qwen_image", "tiny_qwen_image"),
                                                  ("qwen_image_2512", "tiny_qwen_image"),
                                                  ("z_image_turbo", "tiny_z_image")])
def test_text_to_image_rows_make_one_png(sqlite_store, tmp_path, task_type, model):
    row = _run(sqlite_store, tmp_path, task_type, image_generation_row(model))
    (output,) = _done(row)
    assert Image.open(output).format == "PNG" and Image.open(output).size == (SIZE, SIZE)
    assert row.result["model"] == model and row.result["seed"] == 7 and row.result["steps"] == 2
    # lineage fields are Reigh's bookkeeping, not ignored; nothing of Reigh's row is silently dropped
    assert "ignored_params" not in row.result


def test_reigh_model_names_pick_the_real_definitions():
    from source.engine.model_defs import load_model_def
    from source.generation.image_tasks import EDIT_MODELS, REIGH_MODELS

    assert {n: load_model_def(d).weights.repo for n, d in {**REIGH_MODELS, **EDIT_MODELS}.items()} == {
        "qwen-image": "Qwen/Qwen-Image", "qwen-image-2512": "Qwen/Qwen-Image-2512",
        "z-image": "Tongyi-MAI/Z-Image-Turbo", "qwen-edit": "Qwen/Qwen-Image-Edit",
        "qwen-edit-2509": "Qwen/Qwen-Image-Edit-2509", "qwen-edit-2511": "Qwen/Qwen-Image-Edit-2511"}
    assert load_model_def("qwen_image_edit_2511").task_loras["lightning"][0].endswith(
        "Qwen-Image-Edit-2511-Lightning-8steps-V1.0-bf16.safetensors")


def test_qwen_image_edit_writes_the_jpeg_reigh_asks_for(sqlite_store, tmp_path, pictures):
    row = _run(sqlite_store, tmp_path, "qwen_image_edit", magic_edit_row(pictures["source"], model="tiny_qwen_image_edit"))
    (output,) = _done(row)
    assert output.suffix == ".jpg" and Image.open(output).format == "JPEG"
    # Reigh's API-only switches are listed, not silently dropped
    assert {"enable_sync_mode", "max_wait_seconds", "enable_base64_output"} <= set(row.result["ignored_params"])
    assert row.result["parameters"]["system_prompt"].startswith("You are a professional image editor")


def test_image_inpaint_keeps_every_unmasked_pixel(sqlite_store, tmp_path, pictures):
    params = masked_edit_row(pictures["source"], pictures["mask"], model="tiny_qwen_image_edit", num_generations=2)
    row = _run(sqlite_store, tmp_path, "image_inpaint", params)
    outputs = _done(row)
    assert len(outputs) == 2
    white = np.asarray(Image.open(pictures["mask"])) > 127
    source = _pixels(pictures["source"])
    for output in outputs:
        difference = np.abs(_pixels(output) - source)
        assert difference[~white].max() <= 2  # png: exact; the tolerance covers a lossy format
        assert difference[white].mean() > 10  # and the white square was regenerated


def test_annotated_edit_shows_the_model_the_green_annotation(sqlite_store, tmp_path, pictures, monkeypatch):
    import diffusers

    seen = []
    original = diffusers.QwenImageEditPipeline.__call__

    def spy(self, image=None, **kwargs):
        seen.append(np.asarray(image))
        return original(self, image=image, **kwargs)

    monkeypatch.setattr(diffusers.QwenImageEditPipeline, "__call__", spy)
    row = _run(sqlite_store, tmp_path, "annotated_image_edit",
               masked_edit_row(pictures["source"], pictures["mask"], model="tiny_qwen_image_edit"))
    _done(row)
    white = np.asarray(Image.open(pictures["mask"])) > 127
    assert (seen[0][white] == (0, 255, 0)).all() and not (seen[0][~white] == (0, 255, 0)).all(axis=-1).any()


def test_style_row_gives_the_edit_model_both_references(sqlite_store, tmp_path, pictures, monkeypatch):
    import diffusers

    seen = []
    original = diffusers.QwenImageEditPlusPipeline.__call__

    def spy(self, image=None, prompt=None, **kwargs):
        seen.append((image, prompt))
        return original(self, image=image, prompt=prompt, **kwargs)

    monkeypatch.setattr(diffusers.QwenImageEditPlusPipeline, "__call__", spy)
    params = image_generation_row("qwen-image", style_reference_image=pictures["source"],
                                  subject_reference_image=pictures["reference"], style_reference_strength=1.1,
                                  subject_strength=0.5, subject_description="cat",
                                  qwen_edit_model="tiny_qwen_image_edit_plus")
    row = _run(sqlite_store, tmp_path, "qwen_image_style", params)
    _done(row)
    images, prompt = seen[0]
    assert [np.asarray(i).tolist() for i in images] == [_pixels(pictures[k]).tolist() for k in ("source", "reference")]
    assert prompt == "In the style of this image, make an image of this cat: a lighthouse at dusk"
    assert row.result["references"] == 2
    # the tiny definition has no style/subject LoRAs: the row says which were not applied
    assert set(row.result["task_loras_not_in_definition"]) == {"lightning", "style", "subject"}


def test_qwen_image_hires_runs_two_passes(sqlite_store, tmp_path):
    row = _run(sqlite_store, tmp_path, "qwen_image_hires",
               image_generation_row("tiny_qwen_image", hires_scale=1.5, hires_steps=1, hires_denoise=0.6))
    (output,) = _done(row)
    assert Image.open(output).size == (48, 48)
    assert row.result["hires"] == {"scale": 1.5, "steps": 1, "denoise": 0.6, "upscale_method": "bicubic",
                                   "base_resolution": "32x32", "resolution": "48x48"}
    assert sorted(p.name for p in output.parent.glob("tiny_qwen_image_*")) == [output.name]  # no base-pass file left


def test_z_image_i2i_makes_num_images_at_the_source_aspect(sqlite_store, tmp_path):
    wide = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (16, 64, 3), dtype=np.uint8)).save(wide)
    row = _run(sqlite_store, tmp_path, "z_image_turbo_i2i",
               z_image_i2i_row(str(wide), model="tiny_z_image", num_images=2, output_format="webp"))
    outputs = _done(row)
    assert len(outputs) == 2 and all(Image.open(p).format == "WEBP" for p in outputs)
    assert Image.open(outputs[0]).size == (64, 16)  # "auto": the tiny model's 32x32 area at 4:1
    assert row.result["parameters"]["denoising_strength"] == 0.6


@pytest.mark.parametrize(("extra", "size", "fmt"), [({}, (64, 64), "JPEG"),
                                                    ({"scale_factor": 3, "output_format": "png"}, (96, 96), "PNG"),
                                                    ({"upscale_method": "lanczos", "output_format": "webp"},
                                                     (64, 64), "WEBP")])
def test_image_upscale_with_the_model(sqlite_store, tmp_path, pictures, extra, size, fmt):
    row = _run(sqlite_store, tmp_path, "image-upscale",
               upscale_row(pictures["source"], upscale_model="tiny_swin2sr_x2", **extra))
    assert row.status is TaskStatus.COMPLETE, row.error_message
    image = Image.open(row.output_location)
    assert image.size == size and image.format == fmt
    assert row.result["method"] == extra.get("upscale_method", "model")
    assert row.result["ignored_params"] == ["noise_scale"]  # Swin2SR has no noise knob: said, not hidden


@pytest.mark.parametrize(("task_type", "params", "message"), [
    ("image_inpaint", {"image_url": "IMG", "prompt": "x", "model": "tiny_qwen_image_edit"}, "params.mask_url: Field required"),
    ("qwen_image_edit", {"image": "IMG", "prompt": "x", "model": "tiny_z_image"}, "'tiny_z_image' is a z_image model"),
    ("qwen_image_edit", {"prompt": "x", "model": "tiny_qwen_image_edit"}, "give the image to edit as image"),
    ("qwen_image_edit", {"image": "IMG", "model": "tiny_qwen_image_edit", "hires_scale": 2}, "two-pass hires runs"),
    ("z_image_turbo", {"prompt": "x", "model": "tiny_z_image", "output_format": "gif"}, "output_format 'gif'"),
    ("image-upscale", {"image": "IMG", "scale_factor": 9}, "scale_factor: Input should be less than or equal to 8"),
    ("qwen_image_style", {"prompt": "x", "model": "qwen-image"}, "give style_reference_image"),
])
def test_bad_image_rows_fail_with_a_clear_error(sqlite_store, tmp_path, pictures, task_type, params, message):
    params = {k: pictures["source"] if v == "IMG" else v for k, v in params.items()}
    row = _run(sqlite_store, tmp_path, task_type, params)
    assert row.status is TaskStatus.FAILED and message in row.error_message, row.error_message
