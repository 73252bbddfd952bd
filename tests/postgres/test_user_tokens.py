"""Bring-your-own-GPU: a worker holding a user's personal access token (user_api_tokens, stored hashed) and
no service key reaches only the user_* functions, which keep it to that user's projects: over the Supabase
API with the anon key (supabase-py rpc against the local PostgREST stand-in, which switches to the anon role
the way PostgREST does) and over a direct connection with a role that has no rights on any table."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from postgrest.exceptions import APIError
from psycopg import errors
from psycopg.conninfo import make_conninfo

from source.db.models import Capabilities, TaskStatus
from source.db.postgres import PostgresTaskStore
from source.db.supabase_client import make_client
from tests.helpers import run_worker, wait_for
from tests.pg_fixtures import SERVICE_KEY, migrate, schema_of, supabase_like_schema, supabase_roles  # noqa: F401
from tests.postgres.fake_supabase import FakeSupabase

pytestmark = pytest.mark.postgres

ANON_KEY = "sb_publishable_test-anon-key-0c1d2e"
ALICE_TOKEN = "pat_alice_0f9e8d7c6b5a"
BOB_TOKEN = "pat_bob_1a2b3c4d5e6f"


@pytest.fixture
def token_db(supabase_roles, postgres_schema_url) -> dict[str, str]:  # noqa: F811
    """A Supabase-like project with the older web app's tables and the old worker's user_api_tokens holding
    plain tokens, migrated; one project and one queued task each for Alice and Bob."""
    url = supabase_like_schema(postgres_schema_url, legacy=True)
    alice, bob = str(uuid4()), str(uuid4())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE user_api_tokens (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
                     "user_id uuid NOT NULL, token text NOT NULL, label text)")
        conn.execute("INSERT INTO user_api_tokens (user_id, token, label) VALUES (%s, %s, 'laptop'), (%s, %s, 'pc')",
                     (alice, ALICE_TOKEN, bob, BOB_TOKEN))
    migrate(url)
    ids = {"url": url, "alice": alice, "bob": bob}
    with psycopg.connect(url, autocommit=True) as conn:
        for who in ("alice", "bob"):
            project = conn.execute("INSERT INTO projects (user_id) VALUES (%s) RETURNING id", (ids[who],)).fetchone()[0]
            ids[f"{who}_task"] = str(conn.execute(
                "INSERT INTO tasks (task_type, params, status, project_id) VALUES ('ping', '{}', 'Queued', %s) "
                "RETURNING id", (project,)).fetchone()[0])
    return ids


@pytest.fixture
def low_privilege_url(token_db) -> Iterator[str]:
    """A login role with no rights on any table, only USAGE on the schema (as a BYO-GPU box would get)."""
    url = token_db["url"]
    role = f"byo_{uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT USAGE ON SCHEMA "{schema_of(url)}" TO "{role}"')
    yield make_conninfo(url, user=role)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        conn.execute(f'DROP OWNED BY "{role}"')
        conn.execute(f'DROP ROLE "{role}"')


@pytest.fixture
def anon_api(token_db, postgres_url, tmp_path) -> Iterator[FakeSupabase]:
    fake = FakeSupabase(postgres_url, schema_of(token_db["url"]), SERVICE_KEY, tmp_path / "storage",
                        role_keys={ANON_KEY: "anon"})
    yield fake
    fake.close()


def test_existing_plain_tokens_are_hashed_in_place_and_new_ones_on_the_way_in(token_db):
    with psycopg.connect(token_db["url"], autocommit=True) as conn:
        rows = conn.execute("SELECT user_id::text, token, token_hash, label FROM user_api_tokens ORDER BY label"
                            ).fetchall()
        assert rows == [(token_db["alice"], None, hashlib.sha256(ALICE_TOKEN.encode()).hexdigest(), "laptop"),
                        (token_db["bob"], None, hashlib.sha256(BOB_TOKEN.encode()).hexdigest(), "pc")]
        conn.execute("INSERT INTO user_api_tokens (user_id, token) VALUES (%s, 'pat_new')", (token_db["alice"],))
        assert conn.execute("SELECT token, token_hash FROM user_api_tokens WHERE label IS NULL").fetchone() == \
            (None, hashlib.sha256(b"pat_new").hexdigest())


def test_token_worker_over_the_api_completes_only_its_users_rows(token_db, anon_api, tmp_path):
    log_file = tmp_path / "worker.log"
    result = run_worker(tmp_path / "unused.db", tmp_path / "out", "--db-type", "supabase", "--once",
                        "--worker", "alice-gpu", "--save-logging", str(log_file),
                        env={"SUPABASE_URL": anon_api.url, "SUPABASE_ANON_KEY": ANON_KEY,
                             "SUPABASE_ACCESS_TOKEN": ALICE_TOKEN}, timeout=120)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(token_db["url"], autocommit=True) as conn:
        rows = dict(conn.execute("SELECT id::text, status::text || '/' || coalesce(worker_id, '-') FROM tasks"))
    assert rows == {token_db["alice_task"]: "Complete/alice-gpu", token_db["bob_task"]: "Queued/-"}
    assert any(r.startswith("POST /rest/v1/rpc/user_claim_next_task") for r in anon_api.requests)
    called = {r.removeprefix("POST /rest/v1/rpc/") for r in anon_api.requests if "/rpc/" in r}
    assert all(name.startswith("user_") for name in called), called
    for output in (result.stdout, result.stderr, log_file.read_text()):
        assert ALICE_TOKEN not in output


def test_with_the_anon_key_only_token_functions_answer_and_only_for_a_valid_token(token_db, anon_api):
    client = make_client(anon_api.url, ANON_KEY)
    with pytest.raises(APIError) as refused:
        client.rpc("claim_next_task", {"p_worker_id": "sneaky"}).execute()
    assert refused.value.code == "42501"
    with pytest.raises(APIError) as bad_token:
        client.rpc("user_claim_next_task", {"p_token": "pat_guessed", "p_worker_id": "sneaky"}).execute()
    assert bad_token.value.code == "28000" and "invalid or revoked access token" in bad_token.value.message
    claimed = client.rpc("user_claim_next_task", {"p_token": BOB_TOKEN, "p_worker_id": "bob-gpu"}).execute().data
    assert [row["id"] for row in claimed] == [token_db["bob_task"]]
    # Bob cannot touch Alice's row, even knowing its id
    for function, extra in [("user_complete_task", {}), ("user_fail_task", {"p_error_message": "x"}),
                            ("user_heartbeat_task", {"p_lease_seconds": 60})]:
        args = {"p_token": BOB_TOKEN, "p_task_id": token_db["alice_task"], "p_worker_id": "bob-gpu", **extra}
        assert client.rpc(function, args).execute().data is False
    assert client.rpc("user_get_task", {"p_token": BOB_TOKEN, "p_task_id": token_db["alice_task"]}).execute().data == []


def test_token_store_over_a_direct_connection_with_a_low_privilege_role(token_db, low_privilege_url):
    with psycopg.connect(low_privilege_url, autocommit=True) as conn:
        for statement in ("SELECT * FROM tasks", "SELECT * FROM user_api_tokens", "SELECT * FROM projects",
                          "SELECT * FROM claim_next_task('w')", "SELECT tasks_token_user('x')"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)

    store = PostgresTaskStore(low_privilege_url, access_token=ALICE_TOKEN)
    try:
        store.check_schema()
        task = store.claim_next_task("alice-box", lease_seconds=30)
        assert task.id == token_db["alice_task"] and task.project_id
        assert store.claim_next_task("alice-box", lease_seconds=30) is None  # Bob's row is not hers
        assert store.heartbeat(task.id, "alice-box", lease_seconds=30, progress=0.5)
        assert store.task_status(token_db["bob_task"]) is None
        assert not store.fail_task(token_db["bob_task"], "alice-box", error_message="no", output_location="no")
        assert store.complete_task(task.id, "alice-box", output_location="/out/a.json", result={"ok": True})
        assert store.get_task(task.id).status is TaskStatus.COMPLETE
        with pytest.raises(PermissionError, match="personal access token"):
            store.stats()
    finally:
        store.close()

    store = PostgresTaskStore(low_privilege_url, access_token=BOB_TOKEN)
    try:  # user_fail_task writes the error into output_location too when asked (--legacy-output-location)
        task = store.claim_next_task("bob-box", lease_seconds=30)
        assert store.fail_task(task.id, "bob-box", error_message="broken", output_location="broken")
        assert store.get_task(task.id).output_location == "broken"
    finally:
        store.close()

    wrong = PostgresTaskStore(low_privilege_url, access_token="pat_revoked")
    try:
        with pytest.raises(Exception, match="refused the access token"):
            wrong.check_schema()
    finally:
        wrong.close()


def test_revoked_token_is_refused(token_db, low_privilege_url, tmp_path: Path):
    with psycopg.connect(token_db["url"], autocommit=True) as conn:
        conn.execute("UPDATE user_api_tokens SET revoked_at = now() WHERE user_id = %s", (token_db["alice"],))
    result = run_worker(low_privilege_url, tmp_path / "out", "--once", "--supabase-access-token", ALICE_TOKEN)
    assert result.returncode == 1
    assert "refused the access token: invalid or revoked access token" in result.stderr
    assert ALICE_TOKEN not in result.stderr


def test_a_service_key_passed_as_access_token_still_serves_every_project(token_db, anon_api, tmp_path):
    """The older worker's command line: --supabase-access-token <service key> with the anon key."""
    result = run_worker(tmp_path / "unused.db", tmp_path / "out", "--db-type", "supabase", "--once",
                        "--supabase-url", anon_api.url, "--supabase-access-token", SERVICE_KEY,
                        "--supabase-anon-key", ANON_KEY, timeout=120)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(token_db["url"], autocommit=True) as conn:
        assert conn.execute("SELECT array_agg(DISTINCT status::text) FROM tasks").fetchone()[0] == ["Complete"]
    assert "POST /rest/v1/rpc/claim_next_task" in anon_api.requests


def test_a_token_worker_with_capabilities_claims_only_its_users_rows_it_can_run(token_db, low_privilege_url):
    with psycopg.connect(token_db["url"], autocommit=True) as conn:
        for who in ("alice", "bob"):
            conn.execute("INSERT INTO tasks (task_type, params, status, project_id) "
                         "SELECT t, p::jsonb, 'Queued', project_id FROM tasks, (VALUES ('t2v', '{\"model\": \"small\"}'), "
                         "('t2v', '{\"model\": \"big\"}')) AS v(t, p) WHERE id = %s", (token_db[f"{who}_task"],))
    caps = Capabilities(task_types=("t2v", "ping"), models=("small",), modelless_task_types=("ping",))
    store = PostgresTaskStore(low_privilege_url, access_token=ALICE_TOKEN)
    try:
        assert store.has_claimable_task(caps)
        taken = []
        while (task := store.claim_next_task("alice-box", lease_seconds=30, capabilities=caps)) is not None:
            taken.append((task.task_type, task.params().get("model"), task.project_id))
        assert sorted(taken, key=str) == sorted([("ping", None, taken[0][2]), ("t2v", "small", taken[0][2])], key=str)
        assert not store.has_claimable_task(caps)  # her t2v/big row and all of Bob's rows stay Queued
    finally:
        store.close()


def _add_row(token_db, who: str) -> str:
    with psycopg.connect(token_db["url"], autocommit=True) as conn:
        project = conn.execute("SELECT id FROM projects WHERE user_id = %s", (token_db[who],)).fetchone()[0]
        return str(conn.execute("INSERT INTO tasks (task_type, params, status, project_id) "
                                "VALUES ('ping', '{}', 'Queued', %s) RETURNING id", (project,)).fetchone()[0])


def _idle_since(token_db, worker_id: str):
    with psycopg.connect(token_db["url"], autocommit=True) as conn:
        return conn.execute("SELECT idle_since FROM workers WHERE id = %s", (worker_id,)).fetchone()[0]


@pytest.mark.parametrize("transport", ["direct", "api"])
def test_an_idle_token_worker_joins_the_wake_one_set_and_is_woken_for_its_users_row(
        token_db, low_privilege_url, anon_api, transport):
    from source.db.supabase_store import SupabaseTaskStore
    from tests.postgres.test_wake_one import IdleWorker, wait_claimed

    store = (PostgresTaskStore(low_privilege_url, access_token=ALICE_TOKEN) if transport == "direct"
             else SupabaseTaskStore(anon_api.url, ANON_KEY, access_token=ALICE_TOKEN))
    worker = IdleWorker("", "alice-gpu", store=store)
    worker.start()
    try:
        wait_claimed([worker], 1, 10.0)  # her queued row first
        assert worker.claimed == [token_db["alice_task"]]
        assert worker.idle.wait(10)
        wait_for(lambda: _idle_since(token_db, "alice-gpu") is not None, timeout=10)  # registered as idle
        claims_before = worker.claims
        row = _add_row(token_db, "alice")
        started = time.monotonic()
        wait_claimed([worker], 2, 10.0)
        assert worker.claimed[1] == row and time.monotonic() - started < 3.0
        time.sleep(0.5)
        assert worker.claims - claims_before <= 3  # woken once, not polling the table with claims
        if transport == "direct":  # by its doorbell (user_worker_doorbell_*), not a LISTEN of its own
            from source.db.pg_doorbell import Doorbell

            assert isinstance(store._listener, Doorbell) and store._listener.refused is None
    finally:
        worker.finish()
    if transport == "api":
        called = {r.removeprefix("POST /rest/v1/rpc/") for r in anon_api.requests if "/rpc/" in r}
        assert {"user_worker_idle", "user_worker_woken", "user_worker_busy"} <= called
        assert "user_tasks_change_marker" not in called and all(name.startswith("user_") for name in called)


def test_the_idle_functions_check_the_token_and_answer_for_the_users_projects_only(token_db, anon_api):
    client = make_client(anon_api.url, ANON_KEY)
    with pytest.raises(APIError) as refused:
        client.rpc("user_worker_idle", {"p_token": "pat_guessed", "p_worker_id": "x"}).execute()
    assert refused.value.code == "28000"
    # Bob's row is queued, Alice's too: each is told about a claimable row; once Alice's is gone, only Bob is
    assert client.rpc("user_worker_idle", {"p_token": ALICE_TOKEN, "p_worker_id": "a"}).execute().data is True
    assert client.rpc("user_claim_next_task", {"p_token": ALICE_TOKEN, "p_worker_id": "a"}).execute().data
    assert client.rpc("user_worker_idle", {"p_token": ALICE_TOKEN, "p_worker_id": "a"}).execute().data is False
    assert client.rpc("user_worker_idle", {"p_token": BOB_TOKEN, "p_worker_id": "b"}).execute().data is True


def test_a_token_worker_cannot_take_over_another_users_or_a_service_workers_registry_row(token_db, low_privilege_url):
    """Worker ids are owned: Bob's token cannot overwrite, touch or idle Alice's worker row, and no token can
    touch a service worker's; each token keeps full use of its own ids."""
    from source.db.models import WorkerInfo

    service = PostgresTaskStore(token_db["url"])
    alice = PostgresTaskStore(low_privilege_url, access_token=ALICE_TOKEN)
    bob = PostgresTaskStore(low_privilege_url, access_token=BOB_TOKEN)

    def row(worker_id: str):
        with psycopg.connect(token_db["url"], autocommit=True) as conn:
            return conn.execute("SELECT host, status, owner_user_id FROM workers WHERE id = %s",
                                (worker_id,)).fetchone()

    try:
        service.register_worker(WorkerInfo(id="gpu-service-1", host="rack-a"))
        alice.register_worker(WorkerInfo(id="alice-box", host="alice-pc"))
        alice.touch_worker("alice-box", resident_model="tiny_t2v", current_task_id=None)
        assert row("alice-box") == ("alice-pc", "running", token_db["alice"])
        for worker_id, owner in (("alice-box", ("alice-pc", "running", token_db["alice"])),
                                 ("gpu-service-1", ("rack-a", "running", None))):
            with pytest.raises(Exception, match=f"worker id {worker_id} is registered by another user"):
                bob.register_worker(WorkerInfo(id=worker_id, host="bob-pc"))
            with pytest.raises(Exception, match="registered by another user"):
                bob.touch_worker(worker_id, resident_model=None, current_task_id=None, status="stopped")
            with pytest.raises(Exception, match="registered by another user"):
                bob.wait_for_work(worker_id, resident_model=None, timeout=0.1, poll_interval=1.0)
            assert row(worker_id) == owner
        # her own id stays hers to renew; the service side may always (re)register an id, which clears the owner
        alice.register_worker(WorkerInfo(id="alice-box", host="alice-laptop"))
        assert row("alice-box") == ("alice-laptop", "running", token_db["alice"])
        service.register_worker(WorkerInfo(id="alice-box", host="rack-b"))
        assert row("alice-box") == ("rack-b", "running", None)
    finally:
        for store in (service, alice, bob):
            store.close()


def test_a_token_worker_started_under_another_users_worker_id_stops_at_once_saying_so(
        token_db, low_privilege_url, tmp_path):
    from source.db.models import WorkerInfo

    alice = PostgresTaskStore(low_privilege_url, access_token=ALICE_TOKEN)
    try:
        alice.register_worker(WorkerInfo(id="alice-box"))
    finally:
        alice.close()
    result = run_worker(low_privilege_url, tmp_path / "out", "--once", "--supabase-access-token", BOB_TOKEN,
                        "--worker", "alice-box")
    assert result.returncode == 1, result.stderr
    assert "worker id alice-box is registered by another user" in result.stderr
    with psycopg.connect(token_db["url"], autocommit=True) as conn:  # Bob's row was not touched
        assert conn.execute("SELECT status FROM tasks WHERE id = %s", (token_db["bob_task"],)).fetchone()[0] == "Queued"


def test_a_token_workers_metrics_page_answers_with_the_queue_depth_unknown(token_db, low_privilege_url):
    """A token cannot count the shared queue: the metrics page still answers (it raised, failing every scrape),
    the queue depth is NaN and the other figures are there."""
    from prometheus_client import generate_latest

    from source.worker.metrics import WorkerMetrics

    store = PostgresTaskStore(low_privilege_url, access_token=ALICE_TOKEN)
    try:
        page = generate_latest(WorkerMetrics(store, stuck_after_seconds=60).registry).decode()
    finally:
        store.close()
    assert "worker_queue_depth NaN" in page and "worker_loop_last_tick_seconds" in page


def test_a_token_worker_fails_the_row_its_undecodable_claim_gave_it(token_db, low_privilege_url):
    """Migration 028 through the token wrapper: the row the worker's last claim holds ends Failed."""
    store = PostgresTaskStore(low_privilege_url, access_token=ALICE_TOKEN)
    try:
        claimed = store.claim_next_task("alice-gpu", lease_seconds=30)
        assert claimed is not None and claimed.id == token_db["alice_task"]
        failed = store._value("fail_undecodable_claim", p_worker_id="alice-gpu", p_error_message="too deep")
        assert failed == claimed.id
        row = store.get_task(claimed.id)
        assert row.status is TaskStatus.FAILED and row.error_message == "too deep"
        assert store._value("fail_undecodable_claim", p_worker_id="alice-gpu", p_error_message="x") is None
    finally:
        store.close()


def test_the_dispatcher_wakes_an_idle_worker_of_the_rows_own_user_not_the_longest_idle_one(
        token_db, low_privilege_url):
    """Bob's token worker has been idle longest, but it cannot claim Alice's row: Alice's worker (or a service
    worker) is the one woken. Before migration 027 the longest idle was chosen, claimed nothing, and the row
    waited for another worker's next idle renewal."""
    bob = PostgresTaskStore(low_privilege_url, access_token=BOB_TOKEN)
    alice = PostgresTaskStore(low_privilege_url, access_token=ALICE_TOKEN)
    try:
        for store, worker_id in ((bob, "bob-gpu"), (alice, "alice-gpu")):
            while store.claim_next_task(worker_id, lease_seconds=30) is not None:
                pass  # their own queued rows first
            store.wait_for_work(worker_id, resident_model=None, timeout=0.01, poll_interval=30)
            time.sleep(0.05)  # bob first: the longer idle
        assert _idle_since(token_db, "bob-gpu") < _idle_since(token_db, "alice-gpu")
        _add_row(token_db, "alice")
        with psycopg.connect(token_db["url"], autocommit=True) as conn:
            woken = dict(conn.execute("SELECT id, woken_at IS NOT NULL FROM workers WHERE id IN "
                                      "('alice-gpu', 'bob-gpu')").fetchall())
        assert woken == {"alice-gpu": True, "bob-gpu": False}
    finally:
        alice.close()
        bob.close()
