"""The store failing while a finished task's result is written does not stop the worker: it retries for
as long as the row's lease lasts, then leaves the row to be reclaimed and goes on with the next task."""

from __future__ import annotations

import psycopg

from source.db.models import NewTask, TaskStatus
from source.worker.loop import Worker
from source.worker.settings import WorkerSettings


class FlakyCompletions:
    """The real store, except that completing ``broken_id``'s first attempt raises as an outage would."""

    def __init__(self, store, broken_id: str) -> None:
        self._store, self.broken_id = store, broken_id

    def __getattr__(self, name):
        return getattr(self._store, name)

    def complete_task(self, task_id, worker_id, **kwargs):
        if task_id == self.broken_id and self._store.get_task(task_id).attempts == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return self._store.complete_task(task_id, worker_id, **kwargs)


def test_a_store_error_while_reporting_is_logged_and_the_worker_goes_on(sqlite_store, tmp_path):
    broken = sqlite_store.add_task(NewTask("ping", {"message": "first"}, priority=1))
    following = sqlite_store.add_task(NewTask("ping", {"message": "second"}))
    worker = Worker(FlakyCompletions(sqlite_store, broken),
                    WorkerSettings(worker_id="w-flaky", main_output_dir=tmp_path / "out", lease_seconds=2),
                    exit_when_idle=True)
    assert worker.run() == 0
    assert sqlite_store.get_task(following).status is TaskStatus.COMPLETE
    row = sqlite_store.get_task(broken)
    # The first attempt's result could not be stored: its lease ran out, the row was reclaimed and ran again.
    assert row.status is TaskStatus.COMPLETE and row.attempts == 2
