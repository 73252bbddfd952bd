"""Supabase API mode end to end: real worker.py processes and supabase-py speaking HTTP to a local
PostgREST/Storage stand-in that runs the real SQL functions on the real Postgres."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from source.db.config import SchemaOutdated, StoreUnavailable
from source.db.models import NewTask, TaskStatus
from source.db.supabase_client import make_client
from source.db.supabase_store import SupabaseTaskStore
from source.worker.publishing import SupabaseStoragePublisher
from tests.helpers import run_worker
from tests.pg_fixtures import SERVICE_KEY
from tests.postgres.fake_supabase import FakeSupabase

pytestmark = pytest.mark.postgres


def _api_worker(fake: FakeSupabase, tmp_path, *extra: str, key: str = SERVICE_KEY):
    # the store is chosen by flags + env only: no --db-url, so nothing but the API is reachable
    return run_worker(tmp_path / "unused.db", tmp_path / "out", "--db-type", "supabase", "--supabase-url", fake.url,
                      *extra, env={"SUPABASE_SERVICE_ROLE_KEY": key}, timeout=120)


def test_api_mode_worker_claims_over_rpc_and_publishes_outputs_to_storage(fake_supabase, supabase_api_store, tmp_path):
    by_project = supabase_api_store.add_task(NewTask("ping", {"message": "a"}, project_id="proj-1"))
    by_user = supabase_api_store.add_task(NewTask("ping", {"message": "b", "user_id": "user-7"}))
    anonymous = supabase_api_store.add_task(NewTask("ping", {"message": "c"}))
    log_file = tmp_path / "worker.log"
    result = _api_worker(fake_supabase, tmp_path, "--once", "--worker", "api-1", "--save-logging", str(log_file))
    assert result.returncode == 0, result.stderr

    expected_folder = {by_project: "proj-1", by_user: "user-7", anonymous: "unassigned"}
    for task_id, folder in expected_folder.items():
        row = supabase_api_store.get_task(task_id)
        assert (row.status, row.worker_id) == (TaskStatus.COMPLETE, "api-1")
        assert row.output_location == (f"{fake_supabase.url}/storage/v1/object/public/image_uploads/"
                                       f"{folder}/{task_id}/{task_id}_ping.json")
        stored = fake_supabase.object_file("image_uploads", f"{folder}/{task_id}/{task_id}_ping.json").read_bytes()
        assert httpx.get(row.output_location).content == stored  # the public URL serves the uploaded file
        assert f'"task_id": "{task_id}"'.encode() in stored
        assert not (tmp_path / "out" / f"{task_id}_ping.json").exists()  # uploaded, so not kept (--keep-local)
    assert "POST /rest/v1/rpc/claim_next_task" in fake_supabase.requests
    # the key travelled in every request, and never into any log
    for output in (result.stdout, result.stderr, log_file.read_text()):
        assert SERVICE_KEY not in output


def test_failed_upload_keeps_the_local_file_and_fails_the_row_saying_where_it_is(fake_supabase, supabase_api_store,
                                                                                 tmp_path):
    fake_supabase.failing_uploads = 100
    # one attempt: a failed upload is retried later (run_after) while attempts remain (tests/fleet/test_retries.py)
    task_id = supabase_api_store.add_task(NewTask("ping", {"message": "keep me"}, max_attempts=1))
    result = _api_worker(fake_supabase, tmp_path, "--once")
    assert result.returncode == 0, result.stderr
    row = supabase_api_store.get_task(task_id)
    local = (tmp_path / "out" / f"{task_id}_ping.json").resolve()
    assert row.status is TaskStatus.FAILED
    assert "failed after 3 attempts" in row.error_message and "injected upload failure" in row.error_message
    assert row.error_message.endswith(f"the generated file is kept at {local}")
    assert local.is_file()


def test_upload_is_retried_after_a_transient_failure_and_replaces_the_object(fake_supabase, supabase_api_store,
                                                                             tmp_path):
    supabase_api_store.add_task(NewTask("ping", {}, project_id="p"))
    task = supabase_api_store.claim_next_task("w", lease_seconds=30)
    output = tmp_path / "frame.png"
    output.write_bytes(b"first")
    publisher = SupabaseStoragePublisher(make_client(fake_supabase.url, SERVICE_KEY), "image_uploads",
                                         backoff_seconds=0.01)
    fake_supabase.failing_uploads = 2
    url = publisher.publish(task, output)
    output.write_bytes(b"second")
    assert publisher.publish(task, output) == url  # upsert: a retried task replaces its object
    assert httpx.get(url).content == b"second"


def test_api_store_rides_out_a_database_outage_behind_postgrest(fake_supabase, supabase_api_store):
    task_id = supabase_api_store.add_task(NewTask("ping", {}))
    fake_supabase.failing_rpcs = 3
    task = supabase_api_store.claim_next_task("w", lease_seconds=30)
    assert task is not None and task.id == task_id
    fake_supabase.failing_rpcs = 2
    assert supabase_api_store.complete_task(task_id, "w", output_location="u", result={"ok": True})
    assert supabase_api_store.get_task(task_id).status is TaskStatus.COMPLETE


def test_api_mode_with_a_wrong_key_or_missing_functions_is_a_clear_error(fake_supabase, postgres_url, tmp_path):
    wrong = _api_worker(fake_supabase, tmp_path, "--once", key="sb_secret_not-the-right-key-123")
    assert wrong.returncode == 1
    assert "rejected the key" in wrong.stderr and "not-the-right-key" not in wrong.stderr

    bare = FakeSupabase(postgres_url, "public_without_functions", SERVICE_KEY, tmp_path / "s2")
    try:
        with pytest.raises(SchemaOutdated, match="task functions are missing.*version 0.*--migrate-only"):
            SupabaseTaskStore(bare.url, SERVICE_KEY).check_schema()
        with pytest.raises(StoreUnavailable, match="cannot change the schema"):
            SupabaseTaskStore(bare.url, SERVICE_KEY).migrate()
    finally:
        bare.close()


def test_supabase_mode_without_any_settings_refuses_to_fall_back_to_sqlite(tmp_path):
    result = run_worker(tmp_path / "x.db", tmp_path / "out", "--db-type", "supabase", "--once")
    assert result.returncode == 2
    assert "Refusing to fall back to SQLite" in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_supabase_service_key_is_an_alias_of_the_service_role_key(fake_supabase, supabase_api_store, tmp_path):
    """The older worker's environment name for the same key."""
    task_id = supabase_api_store.add_task(NewTask("ping", {}))
    result = run_worker(tmp_path / "unused.db", tmp_path / "out", "--db-type", "supabase", "--once",
                        env={"SUPABASE_URL": fake_supabase.url, "SUPABASE_SERVICE_KEY": SERVICE_KEY}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert supabase_api_store.get_task(task_id).status is TaskStatus.COMPLETE


def test_a_claimed_row_nested_too_deeply_for_the_apis_json_is_failed_saying_so_and_the_next_runs(
        fake_supabase, supabase_api_store, postgres_schema_url):
    """Over the API the claimed row arrives as JSON, parsed by Python: params nested 5,000 levels cannot be
    read there. The row is failed at once with the reason (not left to its lease) and the next row claimed."""
    deep = '{"a": ' * 5000 + "1" + "}" * 5000
    bad = supabase_api_store.add_task(NewTask("ping", {}, priority=5))
    good = supabase_api_store.add_task(NewTask("ping", {"message": "fine"}))
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET params = %s::jsonb WHERE id = %s", (deep, bad))
    claimed = supabase_api_store.claim_next_task("w-api", lease_seconds=30)
    assert claimed is not None and claimed.id == good
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
        status, error, lease = conn.execute("SELECT status, error_message, lease_expires_at FROM tasks WHERE id = %s",
                                            (bad,)).fetchone()
    assert (status, error, lease) == ("Failed", "params is nested too deeply to parse", None)
