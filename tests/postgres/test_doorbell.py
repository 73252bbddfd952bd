"""The worker's doorbell (migration 027): an idle worker's waiting connection sleeps in worker_doorbell_wait
and a ring cancels exactly that sleep; nothing LISTENs, so an insert does not signal every idle worker's
server process. A ring is never lost, never cancels a session that is not the registered doorbell, and a
worker the server may not ring LISTENs instead and is still woken."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from source.db.models import NewTask
from source.db.pg_doorbell import Doorbell
from source.db.pg_listener import ChangeListener
from source.db.postgres import PostgresTaskStore
from tests.helpers import wait_for

pytestmark = pytest.mark.postgres


class Call(threading.Thread):
    """One statement on its own connection, in the background: its result, error and duration."""

    def __init__(self, conn: psycopg.Connection, query: str, params: tuple) -> None:
        super().__init__(daemon=True)
        self.conn, self.query, self.params = conn, query, params
        self.result: object = None
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        started = time.monotonic()
        try:
            self.result = self.conn.execute(self.query, self.params).fetchone()[0]
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc
        self.seconds = time.monotonic() - started


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def _sleeping(admin: psycopg.Connection, pid: int) -> bool:
    return admin.execute("SELECT wait_event = 'PgSleep' FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]


def _wait(conn: psycopg.Connection, worker_id: str, seen: int, seconds: float = 30.0) -> Call:
    call = Call(conn, "SELECT worker_doorbell_wait(%s, %s, %s)", (worker_id, seen, seconds))
    call.start()
    return call


def _woken_by_an_insert(worker: PostgresTaskStore, producer) -> tuple[bool, float, str]:
    """Worker w1 waits for work (up to 20 s, its fallback poll 10 s away) while the producer inserts a row:
    whether it was woken, after how long, and the row's id."""
    result: dict[str, float | bool] = {}

    def idle() -> None:
        started = time.monotonic()
        result["woken"] = worker.wait_for_work("w1", resident_model=None, timeout=20, poll_interval=10)
        result["seconds"] = time.monotonic() - started

    waiter = threading.Thread(target=idle)
    waiter.start()
    time.sleep(0.3)
    task_id = producer.add_task(NewTask("ping", {}))
    waiter.join(10)
    return bool(result.get("woken")), float(result.get("seconds", float("inf"))), task_id


def test_a_ring_ends_the_sleep_at_once_with_the_new_count_and_no_error(postgres_store, postgres_schema_url):
    with _connect(postgres_schema_url) as sleeper, _connect(postgres_schema_url) as ringer:
        seen = sleeper.execute("SELECT worker_doorbell_register('w1')").fetchone()[0]
        call = _wait(sleeper, "w1", seen)
        wait_for(lambda: _sleeping(ringer, sleeper.info.backend_pid), timeout=5.0)
        ringer.execute("SELECT tasks_ring_doorbell('w1', 'wake')")
        call.join(5)
        assert call.error is None and call.result == seen + 1
        assert call.seconds < 3.0  # not the 30 s it would sleep


def test_a_ring_sent_between_two_waits_is_not_lost(postgres_store, postgres_schema_url):
    """The cancel reaches a connection that is not running a statement (and is dropped by the server): the
    next wait waits for the ringer to commit and returns its count at once."""
    with _connect(postgres_schema_url) as sleeper, _connect(postgres_schema_url) as ringer:
        seen = sleeper.execute("SELECT worker_doorbell_register('w1')").fetchone()[0]
        with ringer.transaction():
            ringer.execute("SELECT tasks_ring_doorbell('w1', 'wake')")
            call = _wait(sleeper, "w1", seen)
            time.sleep(0.5)
            assert call.is_alive()  # waiting for the ringer's commit, not returning the old count
        call.join(5)
        assert call.error is None and call.result == seen + 1 and call.seconds < 3.0


def test_the_callers_own_cancel_ends_the_wait_quietly(postgres_store, postgres_schema_url):
    with _connect(postgres_schema_url) as sleeper, _connect(postgres_schema_url) as admin:
        seen = sleeper.execute("SELECT worker_doorbell_register('w1')").fetchone()[0]
        call = _wait(sleeper, "w1", seen)
        wait_for(lambda: _sleeping(admin, sleeper.info.backend_pid), timeout=5.0)
        sleeper.cancel_safe()
        call.join(5)
        assert call.error is None and call.result == seen and call.seconds < 3.0


def test_a_ring_never_cancels_a_session_that_is_not_the_live_doorbell(postgres_store, postgres_schema_url):
    """The registered connection is gone and its pid now names another session: the ring must not cancel
    that session's statement (it NOTIFYs instead)."""
    with _connect(postgres_schema_url) as gone:
        gone.execute("SELECT worker_doorbell_register('w1')")
    with _connect(postgres_schema_url) as victim, _connect(postgres_schema_url) as ringer:
        ringer.execute("UPDATE workers SET doorbell_pid = %s WHERE id = 'w1'", (victim.info.backend_pid,))
        call = Call(victim, "SELECT pg_sleep(1.5)::text", ())
        call.start()
        wait_for(lambda: _sleeping(ringer, victim.info.backend_pid), timeout=5.0)
        ringer.execute("SELECT tasks_ring_doorbell('w1', 'wake')")
        call.join(5)
        assert call.error is None and call.seconds >= 1.4


def test_an_idle_worker_waits_on_its_doorbell_and_an_insert_wakes_it(postgres_store, postgres_schema_url):
    worker = PostgresTaskStore(postgres_schema_url)
    try:
        assert worker.wait_for_work("w1", resident_model=None, timeout=0.2, poll_interval=10) is False
        assert isinstance(worker._listener, Doorbell) and worker._listener.connected
        with _connect(postgres_schema_url) as admin:  # the waiting connection sleeps: it does not LISTEN
            wait_for(lambda: admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event = 'PgSleep' "
                "AND query LIKE '%%worker_doorbell_wait%%'", (admin.info.parameter_status("application_name"),)
            ).fetchone()[0] == 1, timeout=5.0)
        woken, seconds, task_id = _woken_by_an_insert(worker, postgres_store)
        assert woken is True and seconds < 3.0
        claimed = worker.claim_next_task("w1", lease_seconds=30)
        assert claimed is not None and claimed.id == task_id
    finally:
        worker.close()


def test_a_worker_the_server_may_not_ring_listens_instead_and_is_still_woken(postgres_store, postgres_schema_url):
    """The ringers (the functions' owner) may not cancel this worker's session (here: the owner is not a
    superuser and the worker logs in as one): the worker LISTENs on its channel and the ring NOTIFYs it."""
    owner = "wangp_doorbell_test_owner"
    with _connect(postgres_schema_url) as admin:
        if admin.execute("SELECT NOT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
            pytest.skip("the test server's user is not a superuser: it cannot make an owner weaker than itself")
        admin.execute(f"DO $$ BEGIN CREATE ROLE {owner} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        schema = admin.execute("SELECT current_schema()").fetchone()[0]
        admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {owner}')
        admin.execute(f"GRANT SELECT, INSERT, UPDATE ON workers TO {owner}")
        admin.execute(f'GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA "{schema}" TO {owner}')
        for function in ("worker_doorbell_register(text)", "tasks_ring_doorbell(text, text)"):
            admin.execute(f"ALTER FUNCTION {function} OWNER TO {owner}")
    worker = PostgresTaskStore(postgres_schema_url)
    try:
        assert worker.wait_for_work("w1", resident_model=None, timeout=0.2, poll_interval=10) is False
        assert isinstance(worker._listener, ChangeListener)
        woken, seconds, _ = _woken_by_an_insert(worker, postgres_store)
        assert woken is True and seconds < 3.0
    finally:
        worker.close()



def test_a_doorbell_whose_connection_is_terminated_reconnects_and_still_wakes(postgres_store, postgres_schema_url):
    worker = PostgresTaskStore(postgres_schema_url)
    try:
        assert worker.wait_for_work("w1", resident_model=None, timeout=0.2, poll_interval=10) is False
        with _connect(postgres_schema_url) as admin:
            def doorbell_pid() -> int | None:
                return admin.execute("SELECT doorbell_pid FROM workers WHERE id = 'w1'").fetchone()[0]

            first = doorbell_pid()
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            wait_for(lambda: doorbell_pid() not in (None, first) and worker._listener.connected, timeout=10.0)
        # the worker renews its idleness (the wake took it out of the idle set) and sleeps on the new doorbell
        assert isinstance(worker._listener, Doorbell)
        worker.wait_for_work("w1", resident_model=None, timeout=0.2, poll_interval=10)
        woken, seconds, _ = _woken_by_an_insert(worker, postgres_store)
        assert woken is True and seconds < 3.0
    finally:
        worker.close()


def test_rings_and_the_callers_own_cancel_leave_nothing_in_the_server_log():
    """A ring per task must not write an ERROR line per task into the project's database log."""
    import shutil
    import tempfile
    from pathlib import Path

    from tests.pg_fixtures import migrate, throwaway_cluster, url_with_schema

    root = Path(tempfile.mkdtemp(prefix="wangp-doorbell-log-"))  # not under tmp_path: the server runs as postgres
    try:
        with throwaway_cluster(root) as admin_url:
            with _connect(admin_url) as admin:
                admin.execute("CREATE SCHEMA bells")
            url = url_with_schema(admin_url, "bells")
            migrate(url)
            with _connect(url) as sleeper, _connect(url) as ringer:
                seen = sleeper.execute("SELECT worker_doorbell_register('w1')").fetchone()[0]
                for _ in range(3):
                    call = _wait(sleeper, "w1", seen)
                    wait_for(lambda: _sleeping(ringer, sleeper.info.backend_pid), timeout=5.0)
                    ringer.execute("SELECT tasks_ring_doorbell('w1', 'wake')")
                    call.join(5)
                    assert call.error is None and call.result == seen + 1
                    seen = call.result
                call = _wait(sleeper, "w1", seen)
                wait_for(lambda: _sleeping(ringer, sleeper.info.backend_pid), timeout=5.0)
                sleeper.cancel_safe()
                call.join(5)
                assert call.error is None and call.result == seen
                # the same cancel of a plain statement is logged: the log is where this test looks
                call = Call(sleeper, "SELECT pg_sleep(30)::text", ())
                call.start()
                wait_for(lambda: _sleeping(ringer, sleeper.info.backend_pid), timeout=5.0)
                sleeper.cancel_safe()
                call.join(5)
                assert isinstance(call.error, psycopg.errors.QueryCanceled)
            log = (root / "server.log").read_text()
        assert log.count("canceling statement due to user request") == 1, log
    finally:
        shutil.rmtree(root, ignore_errors=True)
