"""PostgreSQL for the tests: the local server on 127.0.0.1:5432 when it answers, else a throwaway cluster
started with the installed binaries; every test gets its own schema (search_path in the URL)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from source.db.postgres import PostgresTaskStore
from source.db.supabase_store import SupabaseTaskStore
from tests.postgres.fake_supabase import FakeSupabase

# Set TEST_POSTGRES_URL to use another server (or an unreachable one to force the throwaway cluster).
URL_ENV = "TEST_POSTGRES_URL"
LOCAL_URLS = ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test",
              "postgresql://postgres@127.0.0.1:5432/postgres")


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _find_binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def throwaway_cluster(root: Path, max_connections: int = 200) -> Iterator[str]:
    """initdb + pg_ctl start in ``root`` (as the postgres user when we are root: initdb refuses root)."""
    initdb, pg_ctl = _find_binary("initdb"), _find_binary("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432 and no initdb/pg_ctl binaries are installed "
                    "(looked under /usr/lib/postgresql/*/bin and PATH)")
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-w", "-l", str(root / "server.log"), "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections={max_connections}", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)


def restart_cluster(root: Path) -> None:
    """``pg_ctl restart`` of a throwaway cluster (same options, recorded in postmaster.opts)."""
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # -l: the new postmaster must not inherit our pipes (run() would wait for it to exit)
    subprocess.run([*as_user, _find_binary("pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log"),
                    "-w", "-m", "fast", "restart"], check=True, capture_output=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database URL with rights to create schemas."""
    candidates = (os.environ[URL_ENV],) if os.environ.get(URL_ENV) else LOCAL_URLS
    for url in candidates:
        if _answers(url):
            yield url
            return
    # not under pytest's tmp dir: that one is private to us, and the server may run as another user
    root = Path(tempfile.mkdtemp(prefix="wangp-pgcluster-"))
    try:
        with throwaway_cluster(root) as url:
            yield url
    finally:
        shutil.rmtree(root, ignore_errors=True)


def url_with_schema(url: str, schema: str) -> str:
    """The schema goes first on the search_path; every connection also carries it as application_name,
    which is how a test finds (and terminates) the backends of its own workers."""
    return make_conninfo(url, options=f"-csearch_path={schema}", application_name=schema)


def schema_of(url: str) -> str:
    return str(conninfo_to_dict(url)["application_name"])


def terminate_backends(admin_url: str, schema: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = %s AND pid <> pg_backend_pid()", (schema,)).fetchall()
    return len(rows)


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty schema for one test; the URL puts it first on the search_path."""
    schema = f"t_{uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield url_with_schema(postgres_url, schema)
    terminate_backends(postgres_url, schema)  # anything a test left behind must not hold the tables
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# The tables as the older web app and the Supabase variant of Headless-Wan2GP made them: uuid ids, a status
# enum without 'Cancelled', jsonb params, timestamptz, the worker's worker_id/claimed_at. Migrations adopt it.
LEGACY_WEBAPP_SCHEMA = """
CREATE TYPE task_status AS ENUM ('Queued', 'In Progress', 'Complete', 'Failed');
CREATE TABLE projects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    name text NOT NULL DEFAULT 'project'
);
CREATE TABLE tasks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_type text NOT NULL,
    params jsonb NOT NULL,
    status task_status NOT NULL DEFAULT 'Queued',
    dependant_on uuid NULL,
    output_location text NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NULL DEFAULT now(),
    generation_started_at timestamptz NULL,
    generation_processed_at timestamptz NULL,
    project_id uuid NULL REFERENCES projects (id),
    worker_id text NULL,
    claimed_at timestamptz NULL
);
"""


@pytest.fixture
def legacy_schema_url(postgres_schema_url: str) -> str:
    """A fresh schema holding the older web app's tables (not migrated)."""
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
        conn.execute(LEGACY_WEBAPP_SCHEMA)
    return postgres_schema_url


# Supabase's roles and auth.uid() on a plain Postgres (cluster-wide roles, made once; NOTES.md "Test data").
SUPABASE_ROLES_SQL = """
SELECT pg_advisory_xact_lock(hashtext('tests:supabase_roles'));
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN BYPASSRLS;
    END IF;
END
$$;
CREATE SCHEMA IF NOT EXISTS auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT NULLIF(current_setting('request.jwt.claims', true)::jsonb ->> 'sub', '')::uuid
$$;
"""
# What a Supabase project grants on public: every new table and function to anon, authenticated, service_role.
SUPABASE_DEFAULT_PRIVILEGES_SQL = """
GRANT USAGE ON SCHEMA {schema} TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
"""


@pytest.fixture(scope="session")
def supabase_roles(postgres_url: str) -> str:
    with psycopg.connect(postgres_url) as conn, conn.transaction():
        conn.execute(SUPABASE_ROLES_SQL)
    return postgres_url


def supabase_like_schema(url: str, *, legacy: bool) -> str:
    """Make the (empty) schema of ``url`` behave like Supabase's public schema, then add the older web app's
    tables when ``legacy``; not migrated."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SUPABASE_DEFAULT_PRIVILEGES_SQL.format(schema=f'"{schema_of(url)}"'))
        if legacy:
            conn.execute(LEGACY_WEBAPP_SCHEMA)
    return url


def migrate(url: str) -> list[str]:
    """What an operator does once per release: ``--migrate-only`` (workers never migrate a shared database)."""
    store = PostgresTaskStore(url)
    try:
        return store.migrate()
    finally:
        store.close()


def corrupt_params(url: str, task_id: str, text: str) -> None:
    """jsonb cannot hold broken JSON; a producer can still store the text as a JSON string (the
    double-encoded params some clients send), which the worker reads as params text."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET params = to_jsonb(%s::text) WHERE id = %s", (text, task_id))


class ContractPostgresStore(PostgresTaskStore):
    """The store plus the one raw write the contract tests need."""

    def corrupt_params_for_tests(self, task_id: str, text: str) -> None:
        corrupt_params(self._conninfo, task_id, text)


class ContractSupabaseStore(SupabaseTaskStore):
    def __init__(self, url: str, key: str, schema_url: str) -> None:
        super().__init__(url, key)
        self.schema_url = schema_url

    def corrupt_params_for_tests(self, task_id: str, text: str) -> None:
        corrupt_params(self.schema_url, task_id, text)


@pytest.fixture
def postgres_store(postgres_schema_url: str) -> Iterator[ContractPostgresStore]:
    migrate(postgres_schema_url)
    store = ContractPostgresStore(postgres_schema_url)
    store.check_schema()
    yield store
    store.close()


@pytest.fixture
def postgres_adopted_store(legacy_schema_url: str) -> Iterator[ContractPostgresStore]:
    """The store on the older web app's uuid/enum table, adopted in place by the migrations."""
    migrate(legacy_schema_url)
    store = ContractPostgresStore(legacy_schema_url)
    store.check_schema()
    yield store
    store.close()


SERVICE_KEY = "sb_secret_test-service-role-key-5f2c9a7e41"


@pytest.fixture
def fake_supabase(postgres_url: str, postgres_schema_url: str, tmp_path: Path) -> Iterator[FakeSupabase]:
    """PostgREST rpc + Storage stand-in over a migrated schema (see tests/postgres/fake_supabase.py)."""
    migrate(postgres_schema_url)
    fake = FakeSupabase(postgres_url, schema_of(postgres_schema_url), SERVICE_KEY, tmp_path / "storage")
    yield fake
    fake.close()


@pytest.fixture
def supabase_api_store(fake_supabase: FakeSupabase, postgres_schema_url: str) -> Iterator[ContractSupabaseStore]:
    store = ContractSupabaseStore(fake_supabase.url, SERVICE_KEY, postgres_schema_url)
    store.check_schema()
    yield store
    store.close()


@contextlib.contextmanager
def as_role(url: str, role: str, user_id: str | None = None) -> Iterator[psycopg.Connection]:
    """What PostgREST does per request: SET ROLE to the key's role, the JWT claims in request.jwt.claims."""
    import json

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET ROLE {role}")
        if user_id:
            conn.execute("SELECT set_config('request.jwt.claims', %s, false)",
                         (json.dumps({"sub": user_id, "role": role}),))
        yield conn


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"{host}:{port} did not open within {timeout} s")
