"""Fixtures for the utility handlers: small synthetic media and an in-process worker on a real store."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from source.worker.loop import Worker
from source.worker.settings import WorkerSettings

GREY_LEVELS = [10, 60, 110, 160, 210]


def run_worker_until_idle(store, output_dir: Path, *, input_roots: tuple[Path, ...] = ()) -> None:
    """The media fixtures live in pytest's temp folders and are served on 127.0.0.1: the worker allows
    both (``input_roots`` overrides the folders, for tests of the policy itself)."""
    roots = input_roots or (Path(tempfile.gettempdir()),)
    worker = Worker(store, WorkerSettings(worker_id="util-w", main_output_dir=output_dir, poll_interval=0.2,
                                          input_roots=roots, allow_private_urls=not input_roots),
                    exit_when_idle=True)
    assert worker.run() == 0


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """A 5-frame grey-ramp video, two images, a text file pretending to be an image, a decompression bomb."""
    from source.media.write import write_video

    folder = tmp_path_factory.mktemp("utility-media")
    frames = np.stack([np.full((32, 48, 3), level / 255.0) for level in GREY_LEVELS])
    video = write_video(frames, folder / "ramp.mp4", 8)
    image_a = folder / "a.png"
    image_b = folder / "b.png"
    cv2.imwrite(str(image_a), np.full((40, 60, 3), 30, np.uint8))
    cv2.imwrite(str(image_b), np.full((40, 60, 3), 220, np.uint8))
    not_image = folder / "notes.png"
    not_image.write_text("this is not a picture")
    huge = folder / "huge.png"  # 72 Mpx declared, a few kB on disk
    Image.new("1", (9000, 8000)).save(huge)
    return {"video": video, "image_a": image_a, "image_b": image_b, "not_image": not_image, "huge": huge}


@pytest.fixture
def media_server(media):
    """The media folder over http on 127.0.0.1; yields its base URL."""
    import functools
    from http.server import SimpleHTTPRequestHandler

    from tests.helpers import http_server

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    with http_server(functools.partial(QuietHandler, directory=str(media["video"].parent))) as url:
        yield url
