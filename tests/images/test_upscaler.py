"""The reusable upscaler (source/media/upscale.py): a real Swin2SR model (tiny random weights here)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from source.errors import InvalidParams
from source.media.upscale import UPSCALE_MODELS, load_upscaler, passes_for


@pytest.fixture(scope="module")
def upscaler():
    return load_upscaler("tiny_swin2sr_x2")


def _image(width: int = 20, height: int = 12) -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize(("scale", "size"), [(1, (20, 12)), (2, (40, 24)), (3, (60, 36)), (4, (80, 48)),
                                             (1.5, (30, 18))])
def test_every_scale_factor_gives_exactly_that_size(upscaler, scale, size):
    assert upscaler.upscale(_image(), scale).size == size


def test_the_model_output_is_not_a_resize(upscaler):
    image = _image()
    by_model = np.asarray(upscaler.upscale(image, 2), dtype=int)
    by_lanczos = np.asarray(upscaler.upscale(image, 2, method="lanczos"), dtype=int)
    assert np.abs(by_model - by_lanczos).mean() > 5  # random weights: far from any interpolation
    assert np.array_equal(by_lanczos, np.asarray(image.resize((40, 24), Image.LANCZOS)))


def test_tiles_cover_the_whole_image_like_one_pass(upscaler):
    """A frame larger than one tile is upscaled tile by tile; every output pixel is written."""
    from source.media.upscale import Upscaler

    tiled = Upscaler(upscaler.name, _folder(), tile=8, overlap=4)
    image = _image(30, 22)
    out = np.asarray(tiled.upscale(image, 2))
    assert out.shape == (44, 60, 3)
    whole = np.asarray(upscaler.upscale(image, 2), dtype=int)
    # window attention sees different neighbours near tile borders: close, not identical
    assert np.abs(out.astype(int) - whole).mean() < 40


def _folder():
    from source.engine.tiny import materialise

    return materialise(UPSCALE_MODELS["tiny_swin2sr_x2"].tiny)


def test_passes_cover_the_factor():
    assert [passes_for(s, 2) for s in (1, 1.5, 2, 3, 4, 8)] == [0, 1, 1, 2, 2, 3]
    assert [passes_for(s, 4) for s in (1, 2, 4, 5, 8)] == [0, 1, 1, 2, 2]


@pytest.mark.parametrize(("scale", "method", "message"), [
    (0.5, "model", "between 1 and 8"), (9, "model", "between 1 and 8"), ("2", "model", "must be a number"),
    (2, "bicubic", "upscale_method 'bicubic' is not supported"),
])
def test_bad_requests_are_refused(upscaler, scale, method, message):
    with pytest.raises(InvalidParams, match=message):
        upscaler.upscale(_image(), scale, method=method)
