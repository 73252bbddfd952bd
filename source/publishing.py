"""Turning a handler's local output file into the row's ``output_location``: the local path, or the public
URL of the file uploaded to Supabase Storage."""

from __future__ import annotations

import mimetypes
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from source.db.config import StoreConfig
from source.db.models import Task
from source.errors import TaskError
from source.paths import task_stem

if TYPE_CHECKING:
    from supabase import Client

log = structlog.get_logger(__name__)

UPLOAD_ATTEMPTS = 3
UPLOAD_BACKOFF_SECONDS = 1.0
_UNSAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]+")


class OutputPublisher(Protocol):
    def publish(self, task: Task, local_path: Path) -> str:
        """Return what goes into ``output_location``; raise TaskError if the output cannot be stored."""


class LocalPublisher:
    """SQLite and direct Postgres without Storage: the absolute local path is the location."""

    def publish(self, task: Task, local_path: Path) -> str:
        return str(Path(local_path).resolve())


class SupabaseStoragePublisher:
    """Uploads to ``<bucket>/<project_or_user>/<task_id>/<filename>`` (upsert, so a retried task replaces
    its object) and returns the public URL. A failed upload never loses the generation: the local file
    stays and the task fails with a message saying where it is."""

    def __init__(self, client: Client, bucket: str, *, attempts: int = UPLOAD_ATTEMPTS,
                 backoff_seconds: float = UPLOAD_BACKOFF_SECONDS) -> None:
        self.bucket = bucket
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self._storage = client.storage.from_(bucket)

    def object_path(self, task: Task, local_path: Path) -> str:
        owner = task.project_id
        if not owner:
            try:
                owner = task.params().get("user_id")
            except TaskError:
                owner = None
        folder = _UNSAFE_SEGMENT.sub("_", str(owner or "unassigned")).strip("._") or "unassigned"
        return f"{folder}/{task_stem(task.id)}/{Path(local_path).name}"

    def publish(self, task: Task, local_path: Path) -> str:
        local_path = Path(local_path).resolve()
        object_path = self.object_path(task, local_path)
        content_type = mimetypes.guess_type(local_path.name)[0] or "application/octet-stream"
        last_error: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                self._storage.upload(object_path, local_path, {"upsert": "true", "content-type": content_type})
                url = self._storage.get_public_url(object_path).rstrip("?")
                log.info("output_uploaded", task_id=task.id, bucket=self.bucket, object=object_path, attempt=attempt)
                return url
            except Exception as exc:  # network, HTTP status, storage errors: all worth another try
                last_error = exc
                log.warning("output_upload_failed", task_id=task.id, bucket=self.bucket, object=object_path,
                            attempt=attempt, error=f"{type(exc).__name__}: {exc}")
                if attempt < self.attempts:
                    time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        raise TaskError(
            f"uploading the output to Supabase Storage failed after {self.attempts} attempts "
            f"(bucket {self.bucket!r}, object {object_path!r}): {type(last_error).__name__}: {last_error}; "
            f"the generated file is kept at {local_path}"
        )


def publish_thumbnail(publisher: OutputPublisher, task: Task, result: dict) -> dict:
    """The result with its ``thumbnail`` published beside the output (a Storage URL in Supabase mode).
    A thumbnail that cannot be uploaded never fails a finished generation: the local path stays, noted."""
    local = result.get("thumbnail")
    if not local or not Path(local).is_file():
        return result
    try:
        return {**result, "thumbnail": publisher.publish(task, Path(local))}
    except TaskError as exc:
        log.warning("thumbnail_upload_failed", task_id=task.id, error=str(exc)[:300])
        return {**result, "thumbnail_upload_error": str(exc)[:300]}


def open_publisher(config: StoreConfig) -> OutputPublisher:
    """Supabase Storage when the project URL and key are known, else local paths."""
    if not config.has_storage:
        return LocalPublisher()
    from source.supabase_client import STORAGE_TIMEOUT_SECONDS, make_client

    assert config.supabase_url and config.supabase_key
    client = make_client(config.supabase_url, config.supabase_key, timeout_seconds=STORAGE_TIMEOUT_SECONDS)
    return SupabaseStoragePublisher(client, config.storage_bucket)
