"""Paths built from task params stay inside the configured output root; every file and folder named
after a task comes from its full id through ``task_stem``."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from source.errors import InvalidParams

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
WORK_FOLDER = "_work"


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


def under_output_root(root: Path, given: str) -> Path:
    """A producer's ``output_dir``/``output_path`` inside ``root``. A relative path that already names the
    output root (``"outputs/openpose"`` with ``--main-output-dir outputs``: relative to the working directory,
    or starting with the root's own folder name, as the older worker's producers wrote them) is not nested
    a second time (no ``outputs/outputs/openpose``). InvalidParams if it would leave ``root``."""
    root_resolved = root.resolve()
    path = Path(given)
    cwd = Path.cwd().resolve()
    if not path.is_absolute():
        from_cwd = (cwd / path).resolve()
        # (a working directory inside the root would make every relative path look like one of these)
        if cwd != root_resolved and root_resolved not in cwd.parents and \
                (from_cwd == root_resolved or root_resolved in from_cwd.parents):
            path = from_cwd
        elif path.parts[:1] == (root_resolved.name,):
            path = Path(*path.parts[1:]) if len(path.parts) > 1 else Path(".")
    return inside_root(root_resolved, str(path))


def unclaimed_file(path: Path, task_id: str) -> Path:
    """``path``, or, when a file is already there (another row asked for the same ``output_path``), the same
    folder with the task's stem in front of the name: one task never overwrites another's output."""
    if not path.exists():
        return path
    return path.with_name(task_output_name(task_id, path.name))


# The older worker's SQLite convention (--legacy-output-location): outputs under <db folder>/public/files,
# output_location "files/<name>" relative to <db folder>/public.
LEGACY_FILES = "files"


def legacy_location_path(location: str, public_root: Path | None) -> str:
    """A row's ``output_location`` as a readable path: ``files/<name>`` (the older SQLite form) lies under
    ``public_root``; anything else is returned as it is."""
    if public_root is not None and location.startswith(f"{LEGACY_FILES}/"):
        return str(inside_root(public_root / LEGACY_FILES, location.removeprefix(f"{LEGACY_FILES}/")))
    return location


def task_stem(task_id: str) -> str:
    """The one name a task's files and folders start with, distinct for distinct ids.

    A plain id (letters, digits, ``._-``, at most 100 characters) is used as it is; any other id is
    escaped, cut to 60 characters and followed by ``+`` and a hash of the full id (``+`` never occurs in
    a plain id, so an escaped name never equals a plain one: ``teamA/job1`` and ``teamB/job1`` differ,
    and a 300-character id stays under the file system's name limit)."""
    if _PLAIN_ID.fullmatch(task_id):
        return task_id
    readable = _UNSAFE_NAME_CHARS.sub("_", task_id).strip("._")[:60]
    return f"{readable}+{hashlib.sha256(task_id.encode()).hexdigest()[:20]}"


def task_output_name(task_id: str, suffix: str) -> str:
    """``<task stem>_<suffix>``: the file name of a task's output."""
    return f"{task_stem(task_id)}_{safe_filename(suffix)}"


def task_work_dir(output_root: Path, task_id: str) -> Path:
    """The task's own scratch folder (downloads, intermediate frames), created, inside the output root."""
    path = inside_root(output_root, WORK_FOLDER, task_stem(task_id))
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_task_work_dir(output_root: Path, task_id: str) -> bool:
    """Delete the task's scratch folder when it is there (a task's end, ``tasks purge``); True if it was."""
    path = inside_root(output_root, WORK_FOLDER, task_stem(task_id))
    if not path.is_dir():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True
