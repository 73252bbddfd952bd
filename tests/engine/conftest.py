"""Engine tests share one tiny-model cache per session (built once, loaded through from_pretrained)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def still_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "still.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def guide_video(tmp_path_factory) -> Path:
    from source.media.write import write_video

    frames = np.linspace(0, 1, 5)[:, None, None, None] * np.ones((5, 32, 32, 3))
    return write_video(frames, tmp_path_factory.mktemp("inputs") / "guide.mp4", 16)


@pytest.fixture(scope="session")
def mask_video(tmp_path_factory) -> Path:
    from source.media.write import write_video

    frames = np.zeros((5, 32, 32, 3))
    frames[2:] = 1.0  # keep the first two frames, generate the rest
    return write_video(frames, tmp_path_factory.mktemp("inputs") / "mask.mp4", 16)
