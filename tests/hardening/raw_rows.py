"""Rows written behind the store's back, the way a clumsy or hostile producer with plain SQL writes them, on
both backends; and a worker drained with a time limit (a worker that cannot get past a row never ends)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from source.db.models import NewTask, TaskStatus
from source.db.postgres import PostgresTaskStore
from source.db.sqlite import SqliteTaskStore
from source.worker.loop import Worker
from source.worker.settings import WorkerSettings

POLL_INTERVAL = 2.0


@dataclass
class RawBackend:
    """A migrated store plus a raw connection that writes whatever bytes and types it is given."""

    name: str
    store: Any
    url: str | None = None
    path: Path | None = None

    def sql(self, statement: str, *args: Any) -> list[tuple]:
        """One statement; SQLite placeholders are ``?``, Postgres ones ``%s``."""
        if self.name == "sqlite":
            with sqlite3.connect(self.path, isolation_level=None) as conn:
                conn.text_factory = bytes  # read back exactly what is stored
                return conn.execute(statement, args).fetchall()
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(statement, args)
            return cur.fetchall() if cur.description else []

    @property
    def ph(self) -> str:
        return "?" if self.name == "sqlite" else "%s"

    def add_old(self, task_type: str = "ping", params: dict | None = None, *, age_seconds: float = 600,
                task_id: str | None = None) -> str:
        """A row created ``age_seconds`` ago, so it is the head of the queue."""
        task_id = self.store.add_task(NewTask(task_type, params or {}, id=task_id))
        if self.name == "sqlite":
            self.sql("UPDATE tasks SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?) WHERE id = ?",
                     f"-{age_seconds} seconds", task_id)
        else:
            self.sql("UPDATE tasks SET created_at = now() - make_interval(secs => %s) WHERE id = %s",
                     age_seconds, task_id)
        return task_id

    def status_of(self, task_id: str) -> tuple[str, str | None]:
        row = self.sql(f"SELECT status, error_message FROM tasks WHERE id = {self.ph}", task_id)[0]
        return tuple(v.decode() if isinstance(v, bytes) else v for v in row)  # type: ignore[return-value]


@pytest.fixture(params=["sqlite", "postgres"])
def raw_backend(request, tmp_path: Path) -> Iterator[RawBackend]:
    if request.param == "sqlite":
        store = SqliteTaskStore(tmp_path / "tasks.db")
        store.migrate()
        backend = RawBackend("sqlite", store, path=tmp_path / "tasks.db")
    else:
        url = request.getfixturevalue("postgres_schema_url")
        store = PostgresTaskStore(url)
        store.migrate()
        backend = RawBackend("postgres", store, url=url)
    yield backend
    store.close()


def drain(store: Any, output_dir: Path, *, timeout: float = 20.0, **settings: Any) -> float:
    """Run one worker until the queue is idle (``--once``); fail if it has not finished within ``timeout``
    (it is then stopped). Returns the seconds it took."""
    worker = Worker(store, WorkerSettings(worker_id="drain", main_output_dir=output_dir,
                                          poll_interval=POLL_INTERVAL, **settings), exit_when_idle=True)
    codes: list[int] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
    thread.start()
    thread.join(timeout)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        worker.request_stop("test timeout")
        thread.join(30)
        raise AssertionError(f"the worker did not drain the queue within {timeout} s")
    assert codes == [0]
    return elapsed


def assert_good_row_completed(store: Any, task_id: str) -> None:
    row = store.get_task(task_id)
    assert row is not None and row.status is TaskStatus.COMPLETE, row
