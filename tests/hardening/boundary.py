"""The file-boundary check shared by the hostile-row tests: every file under the watched folders,
before and after, outside the folders that belong to the task itself."""

from __future__ import annotations

import hashlib
from pathlib import Path


def snapshot(*roots: Path) -> dict[Path, str]:
    files: dict[Path, str] = {}
    for root in roots:
        if root.is_file():
            files[root] = hashlib.sha256(root.read_bytes()).hexdigest()
            continue
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if path.is_file() and not path.is_symlink():
                files[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def touched_outside(before: dict[Path, str], after: dict[Path, str], *own: Path) -> list[str]:
    """Files created, changed or removed between two snapshots, except under ``own`` (the task's folders)."""

    def mine(path: Path) -> bool:
        return any(path == folder or folder in path.parents for folder in own)

    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    return sorted(str(p) for p in changed if not mine(p))
