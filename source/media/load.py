"""Loading the images and videos that params name (paths or already-decoded PIL images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from source.errors import InputUnavailable, InvalidParams


def load_image(value, name: str, size: tuple[int, int] | None = None) -> Image.Image:
    if isinstance(value, Image.Image):
        image = value
    else:
        path = Path(value)
        if not path.is_file():
            raise InputUnavailable(f"{name}: file not found: {path}")
        try:
            image = Image.open(path)
            image.load()
        except OSError as exc:
            raise InputUnavailable(f"{name}: cannot read image {path}: {exc}") from exc
    image = image.convert("RGB")
    return image.resize(size, Image.BICUBIC) if size and image.size != size else image


def load_image_within(value, name: str, size: tuple[int, int]) -> Image.Image:
    """An image shrunk (aspect kept) to fit ``size``: for inputs a pipeline fits to the output itself (VACE's
    reference images, which it pads), so that none enters it larger than the row's output."""
    image = load_image(value, name)
    if image.width > size[0] or image.height > size[1]:
        scale = min(size[0] / image.width, size[1] / image.height)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    return image


def read_frames(path: Path, name: str, limit: int | None = None, size: tuple[int, int] | None = None
                ) -> list[Image.Image]:
    """The video's first ``limit`` frames (all without one), each resized to ``size`` as it is read: a long or
    large guide never sits whole in memory at its own size."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        if size is not None and (frame.shape[1], frame.shape[0]) != size:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        frames.append(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
    capture.release()
    if not frames:
        raise InputUnavailable(f"{name}: cannot read any frame from {path}")
    return frames


def load_video(value, name: str, num_frames: int, size: tuple[int, int]) -> list[Image.Image]:
    """A guide/mask video as exactly ``num_frames`` RGB frames of ``size`` (truncated or last-frame padded)."""
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_file():
            raise InputUnavailable(f"{name}: file not found: {path}")
        frames = read_frames(path, name, num_frames, size) if path.suffix.lower() not in {".png", ".jpg", ".jpeg", ".webp"} else [
            load_image(path, name)
        ]
    elif isinstance(value, Image.Image):
        frames = [value]
    elif isinstance(value, (list, tuple)) and value:
        frames = [v if isinstance(v, Image.Image) else load_image(v, name) for v in value]
    elif isinstance(value, np.ndarray) and value.ndim == 4:
        frames = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in value]
    else:
        raise InvalidParams(f"{name} must be a video path, an image path or a list of frames")
    frames = frames[:num_frames] + [frames[-1]] * max(0, num_frames - len(frames))
    return [load_image(frame, name, size) for frame in frames]
