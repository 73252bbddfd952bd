"""Exceptions that end a task with a message meant for the person who submitted it."""

from __future__ import annotations


class TaskError(Exception):
    """A task cannot succeed; ``str(exc)`` is stored verbatim as the row's ``error_message``."""


class InvalidParams(TaskError):
    """The task's params are malformed, of the wrong type, or missing something required."""


class UnknownTaskType(TaskError):
    """No handler is registered for the row's ``task_type``."""


class NotImplementedTaskType(TaskError):
    """The task type is part of the contract but its handler has not been built yet."""


class ModelUnavailable(TaskError):
    """A model's weights are missing locally and cannot be fetched (offline, wrong repo, ...)."""


class InputUnavailable(TaskError):
    """An input file or URL named by the params cannot be read or fetched."""


class NothingDetected(TaskError):
    """An analysis task found nothing to report in its input (no person for a pose, ...)."""


class TaskCancelled(Exception):
    """Raised at a checkpoint when the running task must stop.

    ``reason`` says why: ``"cancelled"`` (the row was set to Cancelled), ``"shutdown"`` (the worker is
    stopping and will requeue the row), ``"timeout"`` or ``"lease_lost"``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail
