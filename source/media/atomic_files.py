"""Outputs appear whole or not at all: written under a temporary name beside the target, then renamed."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# An output being written carries this in its name until it is whole (``atomic_file``); `tasks purge` removes
# the ones a killed worker left behind.
PARTIAL_MARK = ".partial-"


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` (same folder, same suffix, so encoders pick the same format) that
    becomes ``path`` only once written whole; on any failure (a full disk) the partial file is removed.
    A row never names half a file, and a failed write leaves nothing that fills the disk for the next task."""
    temp = path.with_name(f"{path.stem}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def is_partial(path: Path) -> bool:
    return PARTIAL_MARK in path.name
