"""Row-level security and grants on a Supabase-like database (its roles, its default privileges that hand
every new table and function to anon and authenticated): after the migrations anon can do nothing, an
authenticated producer inserts and reads only its own projects' rows, the service role and the owner's
direct connection do everything."""

from __future__ import annotations

from uuid import uuid4

import psycopg
import pytest
from psycopg import errors

from source.db.models import TaskStatus
from tests.helpers import run_worker
from tests.pg_fixtures import as_role, migrate, supabase_like_schema, supabase_roles  # noqa: F401  (fixture)

pytestmark = pytest.mark.postgres


@pytest.fixture
def supabase_db(supabase_roles, postgres_schema_url) -> str:  # noqa: F811
    """The older web app's tables on a Supabase-like schema, adopted by the migrations."""
    url = supabase_like_schema(postgres_schema_url, legacy=True)
    migrate(url)
    return url


def _project_of(url: str, user_id: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        return str(conn.execute("INSERT INTO projects (user_id) VALUES (%s) RETURNING id", (user_id,)).fetchone()[0])


def _insert_as(conn: psycopg.Connection, project_id: str, **extra: str) -> str:
    columns = ["task_type", "params", "status", "project_id", *extra]
    values = ["ping", '{"message": "mine"}', "Queued", project_id, *extra.values()]
    placeholders = ", ".join(["%s"] * len(values))
    return str(conn.execute(f"INSERT INTO tasks ({', '.join(columns)}) VALUES ({placeholders}) RETURNING id",
                            values).fetchone()[0])


def test_anon_can_neither_read_write_nor_call_any_worker_function(supabase_db):
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        functions = [row[0] for row in conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc AS p "
            "WHERE p.pronamespace = current_schema()::regnamespace AND p.proname = ANY (tasks_worker_functions())")]
        executable = conn.execute(
            "SELECT r.rolname, p.proname FROM pg_proc AS p CROSS JOIN pg_roles AS r "
            "WHERE p.pronamespace = current_schema()::regnamespace AND p.proname = ANY (tasks_worker_functions()) "
            "AND r.rolname IN ('anon', 'authenticated') AND has_function_privilege(r.oid, p.oid, 'EXECUTE')"
        ).fetchall()
        secured = conn.execute("SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
                               "AND relkind = 'r' AND relrowsecurity ORDER BY 1").fetchall()
    assert len(functions) >= 30 and executable == []
    assert [r[0] for r in secured] == ["schema_migrations", "tasks", "tasks_housekeeping", "user_api_tokens",
                                       "workers"]

    refusals = [
        "SELECT * FROM tasks",
        "INSERT INTO tasks (task_type, params) VALUES ('ping', '{}')",
        "UPDATE tasks SET status = 'Cancelled'",
        "SELECT * FROM workers",
        "SELECT * FROM schema_migrations",
        "SELECT * FROM user_api_tokens",
        "SELECT * FROM tasks_housekeeping",
        "SELECT tasks_housekeeping_turn('leases', 5)",
        "SELECT * FROM claim_next_task('anon-worker')",
        "SELECT add_task('ping')",
        "SELECT cancel_task(gen_random_uuid()::text)",
        "SELECT * FROM list_tasks()",
    ]
    for statement in refusals:
        with as_role(supabase_db, "anon") as conn, pytest.raises(errors.InsufficientPrivilege):
            conn.execute(statement)
    with as_role(supabase_db, "anon") as conn:  # a version number is all it can learn
        assert conn.execute("SELECT tasks_schema_version()").fetchone()[0] >= 6


def test_a_user_inserts_and_reads_only_their_own_projects_rows(supabase_db, tmp_path):
    alice, bob = str(uuid4()), str(uuid4())
    alice_project, bob_project = _project_of(supabase_db, alice), _project_of(supabase_db, bob)

    with as_role(supabase_db, "authenticated", alice) as conn:
        first = _insert_as(conn, alice_project)
        second = _insert_as(conn, alice_project, dependant_on=first)  # the dependency trigger runs for her
        assert {str(r[0]) for r in conn.execute("SELECT id FROM tasks")} == {first, second}
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM claim_next_task('alice-laptop')")

    with as_role(supabase_db, "authenticated", bob) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0  # none of Alice's rows
        assert conn.execute("SELECT count(*) FROM tasks WHERE id = %s", (first,)).fetchone()[0] == 0
        for statement, args in [
            ("INSERT INTO tasks (task_type, params, status, project_id) VALUES ('ping', '{}', 'Queued', %s)",
             (alice_project,)),  # into her project
            ("INSERT INTO tasks (task_type, params, status, project_id) VALUES ('ping', '{}', 'Queued', NULL)", ()),
            ("INSERT INTO tasks (task_type, params, status, project_id) VALUES ('ping', '{}', 'Complete', %s)",
             (bob_project,)),  # rows are queued, never marked finished by a producer
        ]:
            with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
                conn.execute(statement, args)
        for statement in ("UPDATE tasks SET status = 'Cancelled'", "DELETE FROM tasks"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
        mine = _insert_as(conn, bob_project)
        assert [str(r[0]) for r in conn.execute("SELECT id FROM tasks")] == [mine]

    with as_role(supabase_db, "service_role") as conn:  # the worker's key on the API: everything
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 3
        claimed = conn.execute("SELECT id FROM claim_next_task('service-worker', 30)").fetchone()[0]
        assert conn.execute("SELECT requeue_task(%s, 'service-worker')", (str(claimed),)).fetchone()[0]

    # the owner's direct connection (a worker with SUPABASE_DB_URL) runs all of them, the chain in order
    result = run_worker(tmp_path / "unused.db", tmp_path / "out", "--db-type", "supabase", "--once",
                        env={"SUPABASE_DB_URL": supabase_db})
    assert result.returncode == 0, result.stderr
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        statuses = {str(r[0]): r[1] for r in conn.execute("SELECT id, status::text FROM tasks")}
    assert statuses == {first: TaskStatus.COMPLETE.value, second: "Complete", mine: "Complete"}


def test_our_own_tables_get_the_same_protection_on_a_supabase_project(supabase_roles, postgres_schema_url):  # noqa: F811
    url = supabase_like_schema(postgres_schema_url, legacy=False)
    migrate(url)
    with as_role(url, "authenticated", str(uuid4())) as conn:
        # without a projects table no user owns a project: producers go through the service role
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("INSERT INTO tasks (task_type, params) VALUES ('ping', '{}')")
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0
    for role in ("anon", "authenticated"):
        with as_role(url, role) as conn, pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM claim_next_task('w')")
    with as_role(url, "service_role") as conn:
        task_id = conn.execute("SELECT add_task('ping')").fetchone()[0]
        assert conn.execute("SELECT id FROM claim_next_task('w')").fetchone()[0] == task_id
