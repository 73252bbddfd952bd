"""Wake-one (migration 011): an inserted row wakes one registered idle worker, the one holding its model
when there is one, and a row chosen for a worker that died is still claimed within the poll interval."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from source.db.models import NewTask
from source.db.postgres import PostgresTaskStore

pytestmark = pytest.mark.postgres

POLL = 1.0


class IdleWorker(threading.Thread):
    """The claim loop's idle path on a real store: claim, wait_for_work, claim again when told to."""

    def __init__(self, url: str, worker_id: str, resident_model: str | None = None, store=None) -> None:
        super().__init__(daemon=True)
        self.store = store if store is not None else PostgresTaskStore(url)
        self.worker_id = worker_id
        self.resident_model = resident_model
        self.claims = 0
        self.claimed: list[str] = []
        self.stop = threading.Event()
        self.idle = threading.Event()

    def run(self) -> None:
        claim = True
        while not self.stop.is_set():
            if claim:
                self.claims += 1
                task = self.store.claim_next_task(self.worker_id, lease_seconds=30,
                                                  resident_model=self.resident_model)
                if task is not None:
                    self.claimed.append(task.id)
                    continue
            claim = self.store.wait_for_work(self.worker_id, resident_model=self.resident_model, timeout=0.2,
                                             poll_interval=POLL, stop=self.stop)
            self.idle.set()

    def finish(self) -> None:
        self.stop.set()
        self.join(5)
        self.store.close()


def start_idle(url: str, ids: list[str], model: str | None = None) -> list[IdleWorker]:
    workers = [IdleWorker(url, worker_id, model) for worker_id in ids]
    for worker in workers:
        worker.start()
    for worker in workers:
        assert worker.idle.wait(10)
    time.sleep(0.3)  # every first (empty) claim done
    return workers


def wait_claimed(workers: list[IdleWorker], n: int, timeout: float) -> float:
    started = time.monotonic()
    while sum(len(w.claimed) for w in workers) < n and time.monotonic() - started < timeout:
        time.sleep(0.01)
    return time.monotonic() - started


def test_one_insert_into_many_idle_workers_costs_at_most_three_claims(postgres_store, postgres_schema_url):
    workers = start_idle(postgres_schema_url, [f"w{i}" for i in range(20)])
    try:
        claims_before = sum(w.claims for w in workers)
        for _ in range(5):
            postgres_store.add_task(NewTask("ping", {}))
            # claimed at all (pickup speed is benchmarks/fleet_simulation.py's, not a loaded test machine's)
            assert wait_claimed(workers, sum(len(w.claimed) for w in workers) + 1, 10.0) < 10.0
            time.sleep(0.3)
        claims = sum(w.claims for w in workers) - claims_before
        # each row: the chosen worker's claim, then its next (empty) claim before it goes idle again
        assert sum(len(w.claimed) for w in workers) == 5
        assert claims <= 3 * 5, claims
    finally:
        for worker in workers:
            worker.finish()


def test_the_worker_holding_the_rows_model_is_the_one_woken(postgres_store, postgres_schema_url):
    workers = start_idle(postgres_schema_url, ["plain-a", "plain-b"]) + start_idle(
        postgres_schema_url, ["holds-flux"], model="flux")
    try:
        task_id = postgres_store.add_task(NewTask("flux", {"model": "flux"}))
        wait_claimed(workers, 1, 5.0)
        assert workers[2].claimed == [task_id]
    finally:
        for worker in workers:
            worker.finish()


def test_a_row_chosen_for_a_dead_worker_is_claimed_by_another_within_the_poll_interval(
        postgres_store, postgres_schema_url):
    dead = start_idle(postgres_schema_url, ["dead"], model="flux")[0]
    dead.stop.set()
    dead.join(5)  # gone without a word: still registered as idle, its idleness not yet expired
    alive = start_idle(postgres_schema_url, ["alive"])
    try:
        task_id = postgres_store.add_task(NewTask("flux", {"model": "flux"}))
        waited = wait_claimed(alive, 1, 3 * POLL)
        with psycopg.connect(postgres_schema_url) as conn:
            woken = conn.execute("SELECT woken_at IS NOT NULL FROM workers WHERE id = 'dead'").fetchone()[0]
        assert woken  # the dispatcher did choose the dead one (it holds the row's model)
        assert alive[0].claimed == [task_id]
        assert waited <= POLL + 0.5
    finally:
        alive[0].finish()
        dead.store.close()


def test_behind_the_transaction_pooler_an_idle_worker_polls_its_wake_marker_and_never_claims(
        postgres_store, postgres_schema_url):
    store = PostgresTaskStore(postgres_schema_url, listen=False)  # no LISTEN, as on port 6543 (not served here)
    calls: list[str] = []
    value, rows = store._value, store._rows
    store._value = lambda function, **params: (calls.append(function), value(function, **params))[1]
    store._rows = lambda function, **params: (calls.append(function), rows(function, **params))[1]
    try:
        assert store.claim_next_task("pooled", lease_seconds=30) is None
        assert not store.wait_for_work("pooled", resident_model=None, timeout=1.5, poll_interval=POLL)
        task_id = postgres_store.add_task(NewTask("ping", {}))
        started = time.monotonic()
        woken = False
        while not woken and time.monotonic() - started < 5:
            woken = store.wait_for_work("pooled", resident_model=None, timeout=0.5, poll_interval=POLL)
        assert woken and time.monotonic() - started < 2.5
        assert store.claim_next_task("pooled", lease_seconds=30).id == task_id
        assert "worker_woken" in calls and "worker_idle" in calls
        assert calls.count("claim_next_task") == 2  # the two above: waiting polled the marker only
    finally:
        store.close()


def test_the_trigger_functions_that_wake_workers_run_as_the_table_owner(postgres_store, postgres_schema_url):
    # a producer (Supabase's authenticated role) cannot see the workers table it wakes through them
    with psycopg.connect(postgres_schema_url) as conn:
        invokers = conn.execute(
            "SELECT p.proname FROM pg_proc AS p WHERE p.pronamespace = current_schema()::regnamespace "
            "AND p.proname IN ('tasks_dispatch_inserted', 'tasks_dispatch_changed', 'tasks_unblock_dependants') "
            "AND NOT p.prosecdef ORDER BY 1").fetchall()
    assert invokers == []


def test_wake_one_on_the_adopted_uuid_and_enum_table(postgres_adopted_store, legacy_schema_url):
    workers = start_idle(legacy_schema_url, ["a", "b", "c"])
    try:
        parent = postgres_adopted_store.add_task(NewTask("ping", {}))
        wait_claimed(workers, 1, 5.0)
        owner = next(w for w in workers if w.claimed)
        child = postgres_adopted_store.add_task(NewTask("ping", {}, dependant_on=parent))
        time.sleep(0.5)
        assert sum(len(w.claimed) for w in workers) == 1  # the child waits for its dependency
        assert owner.store.complete_task(parent, owner.worker_id, output_location=None, result=None)
        assert wait_claimed(workers, 2, 5.0) < 2.0  # the completion woke a worker for the child
        assert child in [task_id for w in workers for task_id in w.claimed]
    finally:
        for worker in workers:
            worker.finish()
