"""Housekeeping (expired leases, the failure cascade, the unrunnable sweep) is done about once per interval by
the whole fleet, by whichever worker the store gives the turn to, not once per interval by every idle worker."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from source.db.models import NewTask, TaskStatus
from source.db.postgres import PostgresTaskStore
from source.db.sqlite import SqliteTaskStore
from source.worker.loop import Worker
from source.worker.settings import WorkerSettings
from tests.helpers import wait_for

STORES = 5


def _stores(kind: str, request, tmp_path: Path) -> list:
    if kind == "sqlite":
        first = SqliteTaskStore(tmp_path / "tasks.db")
        first.migrate()
        return [first] + [SqliteTaskStore(tmp_path / "tasks.db") for _ in range(STORES - 1)]
    url = request.getfixturevalue("postgres_store")._conninfo  # migrated
    return [PostgresTaskStore(url) for _ in range(STORES)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def several_stores(request, tmp_path):
    stores = _stores(request.param, request, tmp_path)
    yield stores
    for store in stores:
        store.close()


def test_callers_at_the_same_instant_get_one_turn_between_them(several_stores):
    start = threading.Barrier(len(several_stores))
    answers: list[bool] = []

    def ask(store, worker_id: str) -> None:
        start.wait()
        answers.append(store.housekeeping_turn("leases", interval_seconds=30, worker_id=worker_id))

    threads = [threading.Thread(target=ask, args=(store, f"w{i}")) for i, store in enumerate(several_stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [False] * (len(several_stores) - 1) + [True]
    # another job has its own turn
    assert several_stores[0].housekeeping_turn("unrunnable", interval_seconds=30, worker_id="w0")


def test_a_fleet_asking_all_the_time_gets_about_one_turn_per_interval(several_stores):
    interval, seconds = 0.5, 2.6
    turns: list[float] = []
    stop = threading.Event()

    def keep_asking(store, worker_id: str) -> None:
        while not stop.wait(0.02):
            if store.housekeeping_turn("leases", interval_seconds=interval, worker_id=worker_id):
                turns.append(time.monotonic())

    threads = [threading.Thread(target=keep_asking, args=(store, f"w{i}")) for i, store in enumerate(several_stores)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    # 5 workers asking 50 times a second each: one turn per interval in all (the first one at once), where
    # each asking for itself would get 5 (the lower bound leaves room for a loaded machine)
    assert 3 <= len(turns) <= seconds / interval + 1, len(turns)
    gaps = [b - a for a, b in zip(sorted(turns), sorted(turns)[1:], strict=False)]
    assert min(gaps) >= interval * 0.7, gaps  # seen by the callers: the server's own gaps are >= interval


class CountingHousekeeping:
    """The store as is, counting the fleet-wide jobs it is asked to run."""

    def __init__(self, store, counts: dict[str, int]) -> None:
        self.store, self.counts = store, counts

    def __getattr__(self, name):
        return getattr(self.store, name)

    def reclaim_expired_leases(self):
        self.counts["reclaim"] += 1
        return self.store.reclaim_expired_leases()


def test_idle_workers_share_the_housekeeping_and_a_dead_workers_row_is_still_put_back(several_stores, tmp_path):
    counts = {"reclaim": 0}
    producer, several_stores = several_stores[0], several_stores[1:]  # a store per worker, one for the test
    task_id = producer.add_task(NewTask("ping", {}))
    assert producer.claim_next_task("died", lease_seconds=0.5).id == task_id  # its worker is gone
    settings = {"main_output_dir": tmp_path / "out", "poll_interval": 0.5, "lease_seconds": 2}
    workers = [Worker(CountingHousekeeping(store, counts), WorkerSettings(worker_id=f"w{i}", **settings),
                      max_tasks=1) for i, store in enumerate(several_stores)]
    threads = [threading.Thread(target=worker.run) for worker in workers]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: producer.get_task(task_id).status is TaskStatus.COMPLETE, timeout=15)
        time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
        elapsed = time.monotonic() - started
    finally:
        for worker in workers:
            worker.request_stop("test over")
        for thread in threads:
            thread.join(15)
    assert producer.get_task(task_id).worker_id != "died"
    interval = workers[0].settings.housekeeping_interval  # 0.5 s
    # each of the 4 would have reclaimed every interval before (about 24 calls in 3 s); now about one per
    # interval, plus each worker's own round when it starts
    assert 1 <= counts["reclaim"] <= elapsed / (interval * 0.8) + 2 + len(workers), (counts, elapsed)


def test_a_starting_worker_cleans_up_at_once_even_when_the_fleets_turn_was_just_taken(several_stores, tmp_path):
    """A crashed worker's row is put back by the next worker that starts, before its first claim, even if
    another worker took the fleet's turn a moment ago (a --once run would otherwise exit leaving it)."""
    producer, other = several_stores[0], several_stores[1]
    task_id = producer.add_task(NewTask("ping", {}))
    assert producer.claim_next_task("died", lease_seconds=0.05).id == task_id
    time.sleep(0.2)
    assert other.housekeeping_turn("leases", interval_seconds=60, worker_id="busy-elsewhere")
    worker = Worker(several_stores[2], WorkerSettings(worker_id="starting", main_output_dir=tmp_path / "out",
                                                      poll_interval=0.5), exit_when_idle=True)
    assert worker.run() == 0
    done = producer.get_task(task_id)
    assert done.status is TaskStatus.COMPLETE and done.worker_id == "starting"
