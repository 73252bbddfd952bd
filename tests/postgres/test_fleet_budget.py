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


def _connections(postgres_url: str, schema_url: str) -> int:
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                             (schema_of(schema_url),)).fetchone()[0]


@pytest.mark.parametrize(("wake_mode", "connections"), [("poll", 1), ("listen", 2), ("doorbell", 2)])
def test_the_wake_mode_flag_decides_whether_an_idle_worker_holds_a_listen_connection(
        postgres_store, postgres_url, postgres_schema_url, tmp_path, wake_mode, connections):
    from tests.helpers import log_events, start_worker, wait_for

    postgres_store.close()  # only the worker's own connections count
    log = tmp_path / "worker.log"
    worker = start_worker(postgres_schema_url, tmp_path / "out", "--worker", f"idle-{wake_mode}", "--poll-interval",
                          "1", log_path=log, env={"WORKER_WAKE_MODE": wake_mode})
    try:
        wait_for(lambda: any(e.get("event") == "worker_started" for e in log_events(log.read_text())), timeout=60)
        time.sleep(2.0)  # idle: registered, waiting
        assert _connections(postgres_url, postgres_schema_url) == connections
        producer = type(postgres_store)(postgres_schema_url)
        try:
            task_id = producer.add_task(NewTask("ping", {}))
            wait_for(lambda: producer.get_task(task_id).status.value == "Complete", timeout=10)
        finally:
            producer.close()
    finally:
        worker.terminate()
        assert worker.wait(timeout=30) == 0


def test_the_connection_budget_and_wake_mode_reach_the_store(postgres_schema_url):
    from source.db import open_store
    from source.db.config import DbType, StoreConfig

    store = open_store(StoreConfig(db_type=DbType.SUPABASE, db_url=postgres_schema_url, db_max_connections=3,
                                   wake_mode="poll"))
    try:
        assert (store._pool.max_size, store.wake, store.listen, store.doorbell) == (3, "one", False, False)
    finally:
        store.close()
    for mode, doorbell in (("auto", True), ("doorbell", True), ("listen", False)):
        store = open_store(StoreConfig(db_type=DbType.SUPABASE, db_url=postgres_schema_url, wake_mode=mode))
        try:
            assert (store.wake, store.listen, store.doorbell) == ("one", True, doorbell), mode
        finally:
            store.close()
    store = open_store(StoreConfig(db_type=DbType.SUPABASE, db_url=postgres_schema_url, wake_mode="broadcast"))
    try:
        assert (store._pool.max_size, store.wake, store.listen) == (1, "all", True)
    finally:
        store.close()


@pytest.mark.parametrize(("args", "message"), [
    (("--wake-mode", "poll"), "--wake-mode applies to --db-type supabase"),
    (("--db-max-connections", "2"), "--db-max-connections applies to a direct Postgres URL"),
    (("--db-url", "postgresql://u@db.example.com:6543/postgres", "--wake-mode", "listen"),
     "a waiting connection does not work through Supabase's transaction pooler"),
    (("--db-url", "postgresql://u@db.example.com:6543/postgres", "--wake-mode", "doorbell"),
     "a waiting connection does not work through Supabase's transaction pooler"),
    (("--db-type", "supabase", "--supabase-url", "http://127.0.0.1:9", "--wake-mode", "listen"),
     "the Supabase API holds no waiting connection"),
])
def test_wake_and_connection_flags_that_cannot_apply_are_refused(tmp_path, args, message):
    from tests.helpers import run_worker

    result = run_worker(tmp_path / "tasks.db", tmp_path / "out", *args,
                        env={"SUPABASE_SERVICE_ROLE_KEY": "sb_secret_x"}, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr
