"""Every loop that retries goes through source.retry.retry_call: the claim loop, the result writes, the
Postgres statements and the LISTEN reconnect, the Supabase API calls and the Storage uploads. Each rides out
a transient failure injected at its boundary (a terminated backend, a held SQLite lock, HTTP 503) with one
log line per attempt, and gives up at once on an answer another try would repeat."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from structlog.testing import capture_logs

from source.db.models import NewTask, TaskStatus
from source.db.pg_listener import CHANNEL, ChangeListener
from source.db.postgres import PostgresTaskStore
from source.db.supabase_client import make_client
from source.errors import StorageUnavailable, TaskError
from source.retry import Backoff, RetryPolicy, retry_call
from source.worker.loop import EXIT_STORE_FAILED, Worker
from source.worker.publishing import SupabaseStoragePublisher
from source.worker.settings import WorkerSettings
from tests.hardening.test_db_outage import hold_exclusive_lock
from tests.helpers import wait_for
from tests.pg_fixtures import SERVICE_KEY, _free_port, schema_of, terminate_backends


def events(logs: list[dict], name: str) -> list[dict]:
    return [entry for entry in logs if entry["event"] == name]


# -- the helper ------------------------------------------------------------------------------------------
def test_each_retried_failure_is_logged_with_its_attempt_and_the_last_one_as_given_up():
    calls = []

    def down():
        calls.append(1)
        raise ConnectionError(f"refused {len(calls)}")

    with capture_logs() as logs, pytest.raises(ConnectionError, match="refused 3"):
        retry_call(down, RetryPolicy(Backoff(first=0.01, jitter=0.0), attempts=3), event="probe_failed",
                   sleep=lambda _s: None, target="db")
    assert [(e["attempt"], e["retry_in"], e["target"]) for e in events(logs, "probe_failed")] == \
        [(1, 0.01, "db"), (2, 0.02, "db")]
    [gave_up] = events(logs, "probe_failed_gave_up")
    assert (gave_up["attempt"], gave_up["reason"], gave_up["log_level"]) == (3, "3 attempts made", "error")
    assert gave_up["error"] == "ConnectionError: refused 3"


def test_a_failure_the_policy_does_not_call_retryable_is_raised_at_once_unlogged():
    calls = []

    def refused():
        calls.append(1)
        raise PermissionError("no")

    policy = RetryPolicy(Backoff(first=0.01), retryable=lambda exc: isinstance(exc, ConnectionError))
    with capture_logs() as logs, pytest.raises(PermissionError):
        retry_call(refused, policy, event="probe_failed", sleep=lambda _s: None)
    assert calls == [1] and logs == []


def test_the_deadline_and_a_stop_request_end_the_retries():
    with pytest.raises(ConnectionError):
        retry_call(lambda: (_ for _ in ()).throw(ConnectionError("x")),
                   RetryPolicy(Backoff(first=1.0, jitter=0.0), deadline_seconds=2.5), event="e",
                   sleep=lambda _s: None)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(ConnectionError):
        retry_call(lambda: (_ for _ in ()).throw(ConnectionError("x")), RetryPolicy(Backoff(first=30.0)),
                   event="e", stop=stop)
    assert time.monotonic() - started < 5  # the 15-30 s wait was cut short
    assert events(logs, "e_gave_up")[0]["reason"] == "stopped"


# -- Postgres statements and the LISTEN reconnect ----------------------------------------------------------
@pytest.mark.postgres
def test_a_statement_on_a_terminated_connection_is_retried_on_a_new_one(postgres_store, postgres_url,
                                                                        postgres_schema_url):
    task_id = postgres_store.add_task(NewTask("ping", {}))
    assert terminate_backends(postgres_url, schema_of(postgres_schema_url)) >= 1  # the pool's connection
    with capture_logs() as logs:
        assert postgres_store.get_task(task_id).status is TaskStatus.QUEUED
    [retried] = events(logs, "postgres_unavailable")
    assert retried["attempt"] == 1 and "terminating connection" in retried["error"]


@pytest.mark.postgres
def test_a_statement_the_server_refuses_is_not_retried(postgres_store):
    with psycopg.connect(postgres_store._conninfo, autocommit=True) as conn:
        conn.execute("DROP FUNCTION get_task(text)")
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(psycopg.errors.UndefinedFunction):
        postgres_store.get_task("x")
    assert time.monotonic() - started < 1.0 and events(logs, "postgres_unavailable") == []


@pytest.mark.postgres
def test_the_listen_connection_reconnects_after_its_backend_is_terminated(postgres_store, postgres_url,
                                                                          postgres_schema_url):
    schema = schema_of(postgres_schema_url)
    with capture_logs() as logs:
        listener = ChangeListener(postgres_schema_url, {}, (CHANNEL,), schema)
        try:
            assert listener.wait_until_connected(5)
            before = listener.version
            terminate_backends(postgres_url, schema)
            assert listener.wait_newer_than(before, 10, None) > before  # a reconnect counts as a change
            assert listener.wait_until_connected(5)
            seen = listener.version
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, schema))
            assert listener.wait_newer_than(seen, 5, None) > seen  # listening again
        finally:
            listener.close()
    assert events(logs, "listen_connection_lost") and events(logs, "listen_reconnected")


@pytest.mark.postgres
def test_a_listen_connection_the_server_refuses_gives_up_and_waiters_poll(postgres_url):
    missing = make_conninfo(postgres_url, dbname="no_such_database_for_listen")
    with capture_logs() as logs:
        listener = ChangeListener(missing, {}, (CHANNEL,), "public")
        listener._thread.join(5)
    assert not listener._thread.is_alive() and not listener.connected
    [refused] = events(logs, "listen_refused")
    assert "no_such_database_for_listen" in refused["error"] and events(logs, "listen_reconnect_failed") == []


# -- the claim loop --------------------------------------------------------------------------------------
def _settings(tmp_path: Path, worker_id: str, **extra) -> WorkerSettings:
    return WorkerSettings(worker_id=worker_id, main_output_dir=tmp_path / "out", poll_interval=0.5,
                          lease_seconds=30, **extra)


class _ServerAwayForTwoClaims(PostgresTaskStore):
    """The store's connection lost on the first two claims: each raises what psycopg raises when the server
    cannot be reached (a real connection attempt to a port nobody listens on), then the server is back."""

    def __init__(self, url: str, away_url: str) -> None:
        super().__init__(url, retry_seconds=0)  # the store gives up at once: the claim loop retries
        self.away_url, self.failures = away_url, 2

    def claim_next_task(self, worker_id: str, **kwargs):
        if self.failures:
            self.failures -= 1
            psycopg.connect(self.away_url, connect_timeout=2).close()
        return super().claim_next_task(worker_id, **kwargs)


@pytest.mark.postgres
def test_the_claim_loop_waits_out_a_lost_connection_and_then_claims(postgres_store, postgres_url,
                                                                    postgres_schema_url, tmp_path):
    task_id = postgres_store.add_task(NewTask("ping", {}))
    away = make_conninfo(postgres_url, host="127.0.0.1", port=str(_free_port()))
    store = _ServerAwayForTwoClaims(postgres_schema_url, away)
    try:
        with capture_logs() as logs:
            worker = Worker(store, _settings(tmp_path, "pg-claimer"), max_tasks=1)
            assert worker.run() == 0
    finally:
        store.close()
    assert postgres_store.get_task(task_id).status is TaskStatus.COMPLETE
    retried = events(logs, "claim_failed")
    assert [e["attempt"] for e in retried] == [1, 2], retried
    assert all("connection" in e["error"].lower() for e in retried), retried


@pytest.mark.postgres
def test_the_claim_loop_stops_the_worker_when_the_store_refuses_the_claim(postgres_store, tmp_path):
    postgres_store.add_task(NewTask("ping", {}))
    with psycopg.connect(postgres_store._conninfo, autocommit=True) as conn:
        for (signature,) in conn.execute("SELECT p.oid::regprocedure::text FROM pg_proc AS p WHERE p.proname = "
                                         "'claim_next_task' AND p.pronamespace = current_schema()::regnamespace"):
            conn.execute(f"ALTER FUNCTION {signature} RENAME TO claim_next_task_gone")
    with capture_logs() as logs:
        worker = Worker(postgres_store, _settings(tmp_path, "refused"), max_tasks=1)
        started = time.monotonic()
        assert worker.run() == EXIT_STORE_FAILED
    assert time.monotonic() - started < 5
    assert events(logs, "claim_failed") == []
    assert "UndefinedFunction" in events(logs, "store_failed")[0]["error"]


# -- writing a task's outcome ------------------------------------------------------------------------------
def test_a_completion_that_meets_a_held_lock_is_retried_until_it_is_stored(sqlite_store, tmp_path):
    from source.db.sqlite import SqliteTaskStore

    task_id = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 0.8}))
    store = SqliteTaskStore(sqlite_store.path, busy_timeout_seconds=0.2)
    worker = Worker(store, _settings(tmp_path, "reporter"), max_tasks=1)
    locker = []
    with capture_logs() as logs:
        thread = threading.Thread(target=worker.run)
        thread.start()
        wait_for(lambda: sqlite_store.get_task(task_id).status is TaskStatus.IN_PROGRESS, timeout=20)
        # claimed and sleeping: the lock outlasts the handler
        locker.append(hold_exclusive_lock(sqlite_store.path, 1.5))
        thread.join(30)
    assert locker[0].wait(10) == 0
    assert sqlite_store.get_task(task_id).status is TaskStatus.COMPLETE
    retried = [e for e in events(logs, "report_failed") if e["write"] == "complete_task"]
    assert retried and retried[0]["attempt"] == 1 and "locked" in retried[0]["error"]
    assert events(logs, "report_abandoned") == []


def test_a_completion_the_database_refuses_is_not_retried_and_the_lease_takes_over(sqlite_store, tmp_path):
    task_id = sqlite_store.add_task(NewTask("ping", {}))
    with sqlite_store._write() as conn:  # an answer, not an outage: every try would meet it
        conn.execute("CREATE TRIGGER refuse_completion BEFORE UPDATE ON tasks WHEN NEW.status = 'Complete' "
                     "BEGIN SELECT RAISE(ABORT, 'completions refused by policy'); END")
    with capture_logs() as logs:
        worker = Worker(sqlite_store, _settings(tmp_path, "refused-reporter"), max_tasks=1)
        started = time.monotonic()
        assert worker.run() == 0
    assert time.monotonic() - started < 10  # not the 30 s lease of retries
    assert events(logs, "report_failed") == []
    [lost] = events(logs, "task_result_not_stored")
    assert "completions refused by policy" in lost["error"]
    assert sqlite_store.get_task(task_id).status is TaskStatus.IN_PROGRESS  # until its lease expires


# -- Supabase API calls and Storage uploads ----------------------------------------------------------------
@pytest.mark.postgres
def test_an_api_call_is_retried_through_503s_with_one_line_per_attempt(fake_supabase, supabase_api_store):
    task_id = supabase_api_store.add_task(NewTask("ping", {}))
    fake_supabase.failing_rpcs = 2
    with capture_logs() as logs:
        assert supabase_api_store.get_task(task_id).id == task_id
    assert [e["attempt"] for e in events(logs, "supabase_unavailable")] == [1, 2]


def _publisher(fake_supabase, bucket: str = "image_uploads") -> SupabaseStoragePublisher:
    return SupabaseStoragePublisher(make_client(fake_supabase.url, SERVICE_KEY), bucket, backoff_seconds=0.01,
                                    keep_local=True)


def _uploads(fake_supabase) -> int:
    return sum(r.startswith("POST /storage/v1/object/") for r in fake_supabase.requests)


@pytest.mark.postgres
def test_an_upload_answered_503_is_tried_again_and_stored(fake_supabase, supabase_api_store, tmp_path):
    supabase_api_store.add_task(NewTask("ping", {}, project_id="p"))
    task = supabase_api_store.claim_next_task("w", lease_seconds=30)
    output = tmp_path / "clip.mp4"
    output.write_bytes(b"video")
    fake_supabase.failing_uploads, fake_supabase.failing_upload_status = 1, 503
    with capture_logs() as logs:
        _publisher(fake_supabase).publish(task, output)
    assert _uploads(fake_supabase) == 2
    [retried] = events(logs, "output_upload_failed")
    assert retried["attempt"] == 1 and "503" in retried["error"] and retried["task_id"] == task.id
    assert fake_supabase.object_file("image_uploads", f"p/{task.id}/clip.mp4").read_bytes() == b"video"


@pytest.mark.postgres
def test_an_upload_storage_refuses_fails_the_task_at_once_keeping_the_file(fake_supabase, supabase_api_store,
                                                                           tmp_path):
    supabase_api_store.add_task(NewTask("ping", {}, project_id="p"))
    task = supabase_api_store.claim_next_task("w", lease_seconds=30)
    output = tmp_path / "clip.mp4"
    output.write_bytes(b"video")
    with capture_logs() as logs, pytest.raises(TaskError) as refused:
        _publisher(fake_supabase, bucket="no-such-bucket").publish(task, output)
    assert not isinstance(refused.value, StorageUnavailable)  # not retried later as a task either
    assert "Bucket not found" in str(refused.value) and str(output.resolve()) in str(refused.value)
    assert _uploads(fake_supabase) == 1 and events(logs, "output_upload_failed") == []
    assert output.is_file()

