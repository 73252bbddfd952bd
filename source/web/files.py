"""Output files over HTTP: local files only from inside the output root, first-frame thumbnails cached there."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

THUMBNAIL_DIR = ".thumbnails"
THUMBNAIL_WIDTH = 320
VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})


def is_remote(location: str) -> bool:
    """A Storage (or any http) output: the browser is sent there, nothing is proxied."""
    return urlsplit(location).scheme in ("http", "https")


class OutputRoot:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def local_file(self, location: str) -> Path | None:
        """The file ``location`` names when it is a regular file inside the root (symlinks resolved
        first, so a link pointing out is refused too); None otherwise."""
        if not location or "\x00" in location:
            return None
        path = Path(location)
        if not path.is_absolute():
            path = self.root / path
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not real.is_relative_to(self.root) or not real.is_file():
            return None
        return real

    def thumbnail(self, source: Path) -> Path | None:
        """A JPEG of the first frame (video) or the picture (image), rendered once and kept under the root.
        None for other kinds of files."""
        suffix = source.suffix.lower()
        if suffix not in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
            return None
        key = hashlib.sha256(str(source).encode()).hexdigest()[:32]
        cached = self.root / THUMBNAIL_DIR / f"{key}.jpg"
        if cached.is_file() and cached.stat().st_mtime >= source.stat().st_mtime:
            return cached
        picture = _first_frame(source) if suffix in VIDEO_SUFFIXES else Image.open(source)
        picture = picture.convert("RGB")
        if picture.width > THUMBNAIL_WIDTH:
            picture = picture.resize((THUMBNAIL_WIDTH, max(1, round(picture.height * THUMBNAIL_WIDTH / picture.width))))
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: two requests for the same thumbnail never serve half a file.
        fd, temp = tempfile.mkstemp(dir=cached.parent, suffix=".jpg.part")
        try:
            with os.fdopen(fd, "wb") as handle:
                picture.save(handle, format="JPEG", quality=85)
            os.replace(temp, cached)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return cached


def _first_frame(path: Path) -> Image.Image:
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            return frame.to_image()
    raise ValueError(f"{path.name} has no video frame")
