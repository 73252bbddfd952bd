"""Paths built from task params stay inside the configured output root."""

from __future__ import annotations

import re
from pathlib import Path

from source.errors import InvalidParams

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str) -> str:
    """A file name with no directory parts and no characters a shell or URL would trip on."""
    cleaned = _UNSAFE_NAME_CHARS.sub("_", Path(name).name).strip("._")
    return cleaned or "output"


def inside_root(root: Path, *parts: str) -> Path:
    """``root/parts...`` resolved (symlinks followed); InvalidParams if it would leave ``root``."""
    root_resolved = root.resolve()
    candidate = root_resolved.joinpath(*parts).resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise InvalidParams(f"path {'/'.join(parts)!r} leaves the output directory {root_resolved}")
    return candidate
