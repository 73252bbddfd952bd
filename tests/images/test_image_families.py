"""The Qwen-Image and Z-Image families through the engine: tiny real pipelines, every mode each one runs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from source.engine.core import Engine
from source.engine.model_defs import load_model_def
from source.engine.params import parse_values, resolve
from source.errors import InvalidParams


@pytest.fixture(scope="module")
def engine():
    return Engine()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(7)
    source = folder / "source.png"
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(source)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    return source, folder / "mask.png"


def _run(engine, tmp_path, model: str, **task):
    definition = load_model_def(model)
    resolved = resolve(definition.settings, parse_values({"prompt": "a red cat", "seed": 3, **task}),
                       model_type=model)
    return engine.generate(model, resolved, output_dir=tmp_path)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=int)


def test_qwen_inpaint_changes_only_the_white_area(engine, tmp_path, pictures):
    source, mask = pictures
    result = _run(engine, tmp_path, "tiny_qwen_image", image_start=str(source), image_mask=str(mask))
    out, original = _pixels(result.paths[0]), _pixels(source)
    white = np.asarray(Image.open(mask)) > 127
    assert np.abs(out - original)[~white].max() == 0
    assert np.abs(out - original)[white].mean() > 10


def test_qwen_img2img_strength_moves_away_from_the_source(engine, tmp_path, pictures):
    source, _ = pictures
    low = _pixels(_run(engine, tmp_path, "tiny_qwen_image", image_start=str(source), denoising_strength=0.3).paths[0])
    high = _pixels(_run(engine, tmp_path, "tiny_qwen_image", image_start=str(source), denoising_strength=1.0).paths[0])
    assert not np.array_equal(low, high)


@pytest.mark.parametrize(("model", "fmt", "suffix"), [("tiny_qwen_image", "jpeg", ".jpg"),
                                                      ("tiny_z_image", "webp", ".webp")])
def test_images_come_in_the_asked_number_and_format(engine, tmp_path, model, fmt, suffix):
    result = _run(engine, tmp_path, model, video_length=2, output_format=fmt)
    assert [p.suffix for p in result.paths] == [suffix, suffix]
    assert all(Image.open(p).format == fmt.upper() for p in result.paths)
    assert not np.array_equal(_pixels(result.paths[0]), _pixels(result.paths[1]))


def test_z_image_img2img_runs_on_the_resident_weights(engine, tmp_path, pictures):
    source, _ = pictures
    result = _run(engine, tmp_path, "tiny_z_image", image_start=str(source), denoising_strength=0.6)
    assert result.paths[0].suffix == ".png" and _pixels(result.paths[0]).shape == (32, 32, 3)


def test_qwen_edit_plus_receives_every_reference(engine, tmp_path, pictures, monkeypatch):
    import diffusers

    seen = []
    original = diffusers.QwenImageEditPlusPipeline.__call__

    def spy(self, image=None, **kwargs):
        seen.append(image)
        return original(self, image=image, **kwargs)

    monkeypatch.setattr(diffusers.QwenImageEditPlusPipeline, "__call__", spy)
    source, mask = pictures
    result = _run(engine, tmp_path, "tiny_qwen_image_edit_plus", image_refs=[str(source), str(mask)])
    assert len(seen[0]) == 2 and seen[0][1].size == (32, 32)
    assert result.paths[0].exists()


def test_system_prompt_changes_what_the_text_encoder_sees(engine, tmp_path):
    plain = _pixels(_run(engine, tmp_path, "tiny_qwen_image").paths[0])
    other = _pixels(_run(engine, tmp_path, "tiny_qwen_image", system_prompt="Draw {only} squares.").paths[0])
    assert not np.array_equal(plain, other)


def test_video_models_refuse_image_only_parameters(engine, tmp_path, pictures):
    from source.engine.features import check_supported

    definition = load_model_def("tiny_t2v")
    resolved = resolve(definition.settings, parse_values({"prompt": "x", "image_mask": str(pictures[1])}))
    with pytest.raises(InvalidParams, match="params.image_mask: wan_t2v models do not take it"):
        check_supported(resolved.params, definition.architecture, image_output=False)
