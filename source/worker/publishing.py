"""Turning a handler's local output file into the row's ``output_location``: the local path, or the URL of
the file uploaded to Supabase Storage or S3-compatible storage (source/worker/s3_storage.py)."""

from __future__ import annotations

import mimetypes
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import structlog
from storage3.exceptions import StorageApiError

from source.db.models import Task
from source.errors import StorageUnavailable, TaskError
from source.retry import Backoff, RetryPolicy, retry_call
from source.task_files.paths import LEGACY_FILES, task_stem, unclaimed_file

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


class LegacyFilesPublisher:
    """--legacy-output-location on SQLite, the older worker's convention: the file moves to
    ``<db folder>/public/files/`` and ``output_location`` is ``files/<name>`` (relative to ``public``)."""

    def __init__(self, public_root: Path) -> None:
        self.folder = Path(public_root) / LEGACY_FILES

    def publish(self, task: Task, local_path: Path) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = unclaimed_file(self.folder / Path(local_path).name, task.id)
        shutil.move(str(local_path), target)
        return f"{LEGACY_FILES}/{target.name}"


class UploadPublisher:
    """An object store: uploads to ``<bucket>/<prefix/><project_or_user>/<task_id>/<filename>`` (overwriting, so
    a retried task replaces its object) and returns the object's URL. A failed upload never loses the
    generation: the local file stays and the task fails with a message saying where it is. After a successful
    upload the local file is deleted (a box runs for months on a finite disk) unless ``keep_local``.
    Subclasses give ``service`` (its name in messages), ``_upload`` and ``is_outage``."""

    service = "object storage"
    bucket: str
    prefix: str = ""

    def __init__(self, bucket: str, *, attempts: int = UPLOAD_ATTEMPTS,
                 backoff_seconds: float = UPLOAD_BACKOFF_SECONDS, keep_local: bool = False, prefix: str = "") -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.keep_local = keep_local
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds

    def object_path(self, task: Task, local_path: Path) -> str:
        owner = task.project_id
        if not owner:
            try:
                owner = task.params().get("user_id")
            except TaskError:
                owner = None
        folder = _UNSAFE_SEGMENT.sub("_", str(owner or "unassigned")).strip("._") or "unassigned"
        key = f"{folder}/{task_stem(task.id)}/{Path(local_path).name}"
        return f"{self.prefix}/{key}" if self.prefix else key

    def _upload(self, object_path: str, local_path: Path, content_type: str) -> str:
        """Store the file at ``object_path``; return its URL."""
        raise NotImplementedError

    def is_outage(self, exc: BaseException) -> bool:
        """Worth another try (the network, a timeout, a 5xx/429/408 answer) rather than a refusal."""
        raise NotImplementedError

    def publish(self, task: Task, local_path: Path) -> str:
        local_path = Path(local_path).resolve()
        object_path = self.object_path(task, local_path)
        content_type = mimetypes.guess_type(local_path.name)[0] or "application/octet-stream"
        policy = RetryPolicy(Backoff(first=self.backoff_seconds, cap=30.0, jitter=0.25), attempts=self.attempts,
                             retryable=self.is_outage)
        try:
            url = retry_call(lambda: self._upload(object_path, local_path, content_type), policy,
                             event="output_upload_failed", log=log, task_id=task.id, bucket=self.bucket,
                             object=object_path)
        except Exception as exc:
            where = (f"(bucket {self.bucket!r}, object {object_path!r}): {type(exc).__name__}: {exc}; "
                     f"the generated file is kept at {local_path}")
            if not self.is_outage(exc):  # a refusal (no such bucket, no right to write): the same next time
                raise TaskError(f"{self.service} refused the output upload {where}") from exc
            # The task as a whole is retried later (run_after); the file stays for that attempt to find.
            raise StorageUnavailable(
                f"uploading the output to {self.service} failed after {self.attempts} attempts {where}") from exc
        log.info("output_uploaded", task_id=task.id, bucket=self.bucket, object=object_path)
        if not self.keep_local:
            local_path.unlink(missing_ok=True)
            log.info("local_output_removed", task_id=task.id, path=str(local_path))
        return url


class SupabaseStoragePublisher(UploadPublisher):
    """Supabase Storage (upsert); the location is the object's public URL."""

    service = "Supabase Storage"

    def __init__(self, client: Client, bucket: str, **options: Any) -> None:
        super().__init__(bucket, **options)
        self._storage = client.storage.from_(bucket)

    def _upload(self, object_path: str, local_path: Path, content_type: str) -> str:
        self._storage.upload(object_path, local_path, {"upsert": "true", "content-type": content_type})
        return self._storage.get_public_url(object_path).rstrip("?")

    def is_outage(self, exc: BaseException) -> bool:
        return is_upload_outage(exc)


def is_upload_outage(exc: BaseException) -> bool:
    """The network, a timeout, or Storage answering 5xx / 429 / 408: worth another try. Any other answer
    (no such bucket, an invalid key, no right to write) or a local problem is not."""
    if isinstance(exc, httpx.TransportError):
        return True
    if not isinstance(exc, StorageApiError):
        return False
    http = exc.__cause__.response.status_code if isinstance(exc.__cause__, httpx.HTTPStatusError) else None
    try:
        status = http or int(exc.status)
    except (TypeError, ValueError):
        return False
    return status >= 500 or status in (408, 429)


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
