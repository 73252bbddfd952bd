"""Output files over HTTP: local files only from inside the output root, first-frame thumbnails cached there."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

from source.task_files.policy import MAX_IMAGE_PIXELS

THUMBNAIL_DIR = ".thumbnails"
THUMBNAIL_WIDTH = 320
VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
# The worker's own cap on an input picture; a thumbnail decodes no more than that, nor an image file over this.
MAX_THUMBNAIL_PIXELS = MAX_IMAGE_PIXELS
MAX_THUMBNAIL_SOURCE_BYTES = 256 * 2**20
THUMBNAILS_AT_ONCE = 2


def is_remote(location: str) -> bool:
    """A Storage (or any http) output: the browser is sent there, nothing is proxied."""
    return urlsplit(location).scheme in ("http", "https")


class OutputRoot:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._rendering = threading.BoundedSemaphore(THUMBNAILS_AT_ONCE)

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
        None for other kinds of files; ThumbnailRefused for a picture too large or a file that does not decode."""
        suffix = source.suffix.lower()
        if suffix not in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
            return None
        key = hashlib.sha256(str(source).encode()).hexdigest()[:32]
        cached = self.root / THUMBNAIL_DIR / f"{key}.jpg"
        if cached.is_file() and cached.stat().st_mtime >= source.stat().st_mtime:
            return cached
        with self._rendering:  # a few at a time: each decodes a whole picture
            picture = _render(source, suffix in VIDEO_SUFFIXES)
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


class ThumbnailRefused(Exception):
    """An output the server will not render: ``status`` 413 (too large) or 422 (does not decode)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _render(source: Path, video: bool) -> Image.Image:
    """The picture, checked against the caps from its header before any pixel is decoded (a 140 KB PNG may
    declare 12000×12000: 800 MB once decoded)."""
    import av

    kind = "video" if video else "image"
    if not video and source.stat().st_size > MAX_THUMBNAIL_SOURCE_BYTES:
        raise ThumbnailRefused(413, f"the image is over {MAX_THUMBNAIL_SOURCE_BYTES >> 20} MiB; no thumbnail")
    try:
        if video:
            picture = _first_frame(source)
        else:
            with Image.open(source) as image:
                _check_pixels(image.width, image.height)
                image.draft("RGB", (THUMBNAIL_WIDTH, THUMBNAIL_WIDTH))  # JPEG: decode at a fraction of the size
                picture = image.convert("RGB")
    except ThumbnailRefused:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, av.error.FFmpegError) as exc:
        raise ThumbnailRefused(422, f"the output does not decode as {kind} ({type(exc).__name__})") from None
    if picture.width > THUMBNAIL_WIDTH:
        picture = picture.resize((THUMBNAIL_WIDTH, max(1, round(picture.height * THUMBNAIL_WIDTH / picture.width))))
    return picture


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_THUMBNAIL_PIXELS:
        raise ThumbnailRefused(413, f"the picture is {width}x{height}, over {MAX_THUMBNAIL_PIXELS} pixels; "
                                    "no thumbnail")


def _first_frame(path: Path) -> Image.Image:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        _check_pixels(stream.codec_context.width, stream.codec_context.height)
        for frame in container.decode(stream):
            return frame.to_image()
    raise ValueError(f"{path.name} has no video frame")
