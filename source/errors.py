"""Exceptions that end a task with a message meant for the person who submitted it."""

from __future__ import annotations

import errno
import os
from enum import Enum


class TaskError(Exception):
    """A task cannot succeed; ``str(exc)`` is stored verbatim as the row's ``error_message``."""


class RetryableError(TaskError):
    """A transient failure (network, storage, a hub 5xx): the row goes back to the queue with exponential
    backoff and jitter (``run_after``) until its ``max_attempts`` are used, instead of failing at once."""


class InvalidParams(TaskError):
    """The task's params are malformed, of the wrong type, or missing something required."""


class DefinitionError(TaskError):
    """The operator's configuration is wrong (a model definition's settings, a routing table entry), not
    the submitter's params: every task using it fails the same way until the operator fixes it."""


class UnknownTaskType(TaskError):
    """No handler is registered for the row's ``task_type``."""


class NotImplementedTaskType(TaskError):
    """The task type is part of the contract but its handler has not been built yet."""


class ModelUnavailable(TaskError):
    """A model's weights are missing locally and cannot be fetched (offline, wrong repo, ...)."""


class InputUnavailable(TaskError):
    """An input file or URL named by the params cannot be read or fetched."""


class InputTemporarilyUnavailable(InputUnavailable, RetryableError):
    """A URL input could not be fetched now (connection, timeout, HTTP 408/429/5xx); worth a later attempt."""


class ModelTemporarilyUnavailable(ModelUnavailable, RetryableError):
    """The hub answered 5xx or could not be reached: the weights may well download on a later attempt."""


class StorageUnavailable(RetryableError):
    """Supabase Storage refused or dropped the upload after its own quick retries."""


class NothingDetected(TaskError):
    """An analysis task found nothing to report in its input (no person for a pose, ...)."""


class OutOfMemory(TaskError):
    """Generation ran out of (GPU) memory; the model was unloaded and the worker goes on."""


class CancelReason(str, Enum):
    """Why a running task was asked to stop."""

    CANCELLED = "cancelled"  # the row was set to Cancelled
    SHUTDOWN = "shutdown"  # the worker is stopping and will requeue the row
    TIMEOUT = "timeout"  # --task-timeout or params.timeout_seconds ran out
    LEASE_LOST = "lease_lost"  # another worker may run the row now


class TaskCancelled(Exception):
    """Raised at a checkpoint when the running task must stop; ``reason`` says why."""

    def __init__(self, reason: CancelReason | str, detail: str = "") -> None:
        self.reason = CancelReason(reason)
        super().__init__(detail or self.reason.value)
        self.detail = detail


# The file system refusing a write: disk or quota full, read-only mount, permissions, file size limit.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


def describe_storage_error(exc: BaseException) -> str | None:
    """A message naming the storage problem when ``exc`` or one of its causes is the file system refusing
    an operation (the task then fails with it instead of a traceback); None otherwise."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            code = errno.errorcode.get(current.errno, str(current.errno))
            where = f": {current.filename}" if current.filename else ""
            reason = current.strerror or os.strerror(current.errno)
            return f"storage error: {reason} ({code}){where}"
        current = current.__cause__ or current.__context__
    return None
