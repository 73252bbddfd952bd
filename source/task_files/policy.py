"""The input policy, in one place: which local files and which URLs a row may name, and what their
content must be before anything uses it.

- local paths: only files that resolve (symlinks followed) under the configured input roots;
- URLs: only http(s), and only hosts whose every address is public (checked after DNS resolution, on
  the first request and on every redirect) unless private addresses are allowed;
- content: an image must decode as an image of an allowed format, a video must open with PyAV as an
  allowed container holding a video stream of an allowed codec and decode a frame, whatever the
  file's name says (ffmpeg plays a ``.txt`` file as "video" through its tty demuxer).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from source.errors import InputUnavailable, InvalidParams

InputKind = Literal["image", "video", "media"]

MAX_DOWNLOAD_BYTES = 512 * 2**20
DOWNLOAD_DEADLINE_SECONDS = 120.0
MAX_IMAGE_PIXELS = 64 * 2**20

IMAGE_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF"})
# PyAV's format names are ffmpeg's demuxer names (comma lists for the multi-extension ones).
VIDEO_CONTAINERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "gif", "mpegts", "mpeg", "flv",
                              "ogg", "h264", "hevc", "ivf", "m4v"})
VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg1video", "mpeg2video", "mjpeg",
                          "prores", "ffv1", "gif", "png", "theora", "rawvideo", "h263", "dnxhd", "qtrle",
                          "huffyuv", "utvideo", "msmpeg4v2", "msmpeg4v3", "wmv2"})


@dataclass(frozen=True)
class InputPolicy:
    """What rows may read. ``roots``: folders local inputs must lie in (resolved at check time)."""

    roots: tuple[Path, ...]
    allow_private_urls: bool = False
    max_download_bytes: int = MAX_DOWNLOAD_BYTES
    download_deadline: float = DOWNLOAD_DEADLINE_SECONDS

    def check_local(self, value: str | Path, name: str) -> Path:
        """``value`` as an existing regular file under one of the roots, symlinks resolved."""
        path = Path(value).expanduser()
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise InputUnavailable(f"params.{name}: file not found: {path}") from None
        if not resolved.is_file():
            raise InputUnavailable(f"params.{name}: not a regular file: {path}")
        for root in self.roots:
            root_resolved = root.resolve()
            if resolved == root_resolved or root_resolved in resolved.parents:
                return resolved
        roots = ", ".join(str(r) for r in self.roots) or "none"
        raise InvalidParams(f"params.{name}: {path} is outside the allowed input folders ({roots}); "
                            "the worker's --input-roots lists them")

    def check_url(self, url: str, name: str) -> None:
        """InvalidParams unless ``url`` is http(s) to a host whose every address this policy allows."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise InvalidParams(f"params.{name}: URL scheme {scheme!r} is not allowed (only http and https)")
        host = parts.hostname
        if not host:
            raise InvalidParams(f"params.{name}: URL has no host")
        if self.allow_private_urls:
            return
        port = parts.port or (443 if scheme == "https" else 80)
        for address in resolve_host(host, port, name):
            if not self.allows_address(address, port):
                raise InvalidParams(f"params.{name}: host {host!r} resolves to the non-public address {address}; "
                                    "private, loopback and link-local addresses are refused "
                                    "(the worker's --allow-private-urls allows them)")


    def allows_address(self, address: str, port: int) -> bool:
        """Whether a URL input may connect to ``address`` (checked again on the socket once connected)."""
        return self.allow_private_urls or is_public_address(address)


def resolve_host(host: str, port: int, name: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputUnavailable(f"params.{name}: cannot resolve host {host!r}: {exc}") from None
    return sorted({str(info[4][0]).split("%", 1)[0] for info in infos})


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class TaskInputs:
    """One task's view of the policy: where its downloads go (its own work folder) and what it may read."""

    work_dir: Path
    policy: InputPolicy = field(default_factory=lambda: InputPolicy(roots=(Path.cwd(),)))


def sniff(path: Path, name: str, kind: InputKind) -> None:
    """InputUnavailable unless ``path``'s content is what ``kind`` asks for (``media``: image or video)."""
    if kind == "image":
        sniff_image(path, name)
    elif kind == "video":
        sniff_video(path, name)
    else:
        try:
            sniff_image(path, name)
        except InputUnavailable as image_error:
            try:
                sniff_video(path, name)
            except InputUnavailable:
                raise InputUnavailable(f"params.{name}: {path.name} is neither an image nor a video "
                                       f"({image_error}; {_video_reason(path)})") from None


def sniff_image(path: Path, name: str) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format not in IMAGE_FORMATS:
                raise InputUnavailable(f"params.{name}: {path.name} is a {image.format} image; allowed: "
                                       f"{', '.join(sorted(IMAGE_FORMATS))}")
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputUnavailable(f"params.{name}: {path.name} is {width}x{height}; the limit is "
                                       f"{MAX_IMAGE_PIXELS} pixels")
            image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        raise InputUnavailable(f"params.{name}: {path.name} is not a readable image") from exc


def sniff_video(path: Path, name: str) -> None:
    reason = _video_reason(path)
    if reason:
        raise InputUnavailable(f"params.{name}: {path.name} is not a readable video ({reason})")


def _video_reason(path: Path) -> str:
    """Why ``path`` is not an acceptable video, or "" when it is."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if container.format.name not in VIDEO_CONTAINERS:
                return f"container {container.format.name!r} is not a video container"
            streams = container.streams.video
            if not streams:
                return "no video stream"
            stream = streams[0]
            if stream.codec_context.name not in VIDEO_CODECS:
                return f"codec {stream.codec_context.name!r} is not a video codec"
            for _frame in container.decode(stream):
                return ""
            return "no frame decodes"
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:120]}"


def default_roots(output_root: Path, configured: tuple[Path, ...] = ()) -> tuple[Path, ...]:
    """The roots a worker allows: the output root always (dependency outputs live there), then the
    configured folders, or the working directory when none is configured."""
    extra = configured or (Path(os.getcwd()),)
    return (output_root, *extra)
