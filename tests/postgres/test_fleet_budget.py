"""What one worker costs the shared Postgres: at most 2 server connections, and while it runs a task one
heartbeat write per beat, progress coalesced (issue 23)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from source.db.models import NewTask
from source.handlers.context import CancelSignal, ProgressState
from source.worker.heartbeat import Heartbeat
from tests.pg_fixtures import schema_of

pytestmark = pytest.mark.postgres


class CountingBeats:
    def __init__(self, store) -> None:
        self.store, self.beats = store, 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def heartbeat(self, *args, **kwargs):
        self.beats += 1
        return self.store.heartbeat(*args, **kwargs)


def test_a_busy_worker_holds_at_most_two_server_connections(postgres_store, postgres_url, postgres_schema_url):
    store = postgres_store
    first = store.add_task(NewTask("ping", {}))
    store.add_task(NewTask("ping", {}))
    task = store.claim_next_task("w", lease_seconds=2)
    assert task.id == first
    stop = threading.Event()
    beat = Heartbeat(store, task.id, "w", lease_seconds=2, interval=0.05, cancel=CancelSignal(),
                     progress=ProgressState())
    beat.start()

    def busy_loop() -> None:  # the claim loop's own traffic, at the same time as the heartbeat's
        while not stop.is_set():
            store.has_claimable_task()
            store.wait_for_work("w", resident_model=None, timeout=0.01, poll_interval=1.0, stop=stop)

    threads = [threading.Thread(target=busy_loop) for _ in range(3)]
    for thread in threads:
        thread.start()
    peak = 0
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        for _ in range(40):
            peak = max(peak, admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                           (schema_of(postgres_schema_url),)).fetchone()[0])
            time.sleep(0.025)
    stop.set()
    for thread in threads:
        thread.join()
    beat.stop()
    assert 1 <= peak <= 2


def test_progress_reported_every_few_ms_is_written_once_per_flush_window(postgres_store):
    task_id = postgres_store.add_task(NewTask("ping", {}))
    assert postgres_store.claim_next_task("w", lease_seconds=60).id == task_id
    store, progress = CountingBeats(postgres_store), ProgressState()
    beat = Heartbeat(store, task_id, "w", lease_seconds=60, interval=15, cancel=CancelSignal(), progress=progress)
    beat.start()
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        progress.report((time.monotonic() - started) / 3)
        time.sleep(0.01)
    beat.stop()
    assert store.beats == 1  # the first flush; the next one waits for the window, not for each report
    assert 0 < postgres_store.get_task(task_id).progress < 0.7
