"""Turning a handler's local output file into the row's ``output_location``."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from source.db.models import Task


class OutputPublisher(Protocol):
    def publish(self, task: Task, local_path: Path) -> str:
        """Return what goes into ``output_location``; raise TaskError if the output cannot be stored."""


class LocalPublisher:
    """SQLite and direct Postgres without Storage: the absolute local path is the location."""

    def publish(self, task: Task, local_path: Path) -> str:
        return str(Path(local_path).resolve())
