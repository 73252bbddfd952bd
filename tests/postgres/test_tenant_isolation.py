"""Two tenants in one queue, on the real Postgres with Supabase's roles: users A and B, each signed in as
``authenticated`` in a project of their own and holding a personal access token. Each test is a case of
docs/security.md: what B tries against A's orchestrators, inputs, errors and running rows, and what happens."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4

import numpy as np
import psycopg
import pytest
from psycopg import errors

from source.db.models import NewTask, child_task_id
from source.db.postgres import PostgresTaskStore
from source.errors import TaskError
from tests.helpers import run_worker, start_worker, wait_for
from tests.pg_fixtures import (  # noqa: F401  (fixture)
    as_role,
    connect,
    migrate,
    supabase_like_schema,
    supabase_roles,
)

pytestmark = pytest.mark.postgres

A_TOKEN, B_TOKEN = "pat_tenant_a_7c1f0e", "pat_tenant_b_93d2aa"


@pytest.fixture
def tenants(supabase_roles, postgres_schema_url) -> SimpleNamespace:  # noqa: F811
    url = supabase_like_schema(postgres_schema_url, legacy=True)
    migrate(url)
    a, b = str(uuid4()), str(uuid4())
    with connect(url) as conn:
        projects = {who: str(conn.execute("INSERT INTO projects (user_id) VALUES (%s) RETURNING id",
                                          (who,)).fetchone()[0]) for who in (a, b)}
        conn.execute("INSERT INTO user_api_tokens (user_id, token) VALUES (%s, %s), (%s, %s)",
                     (a, A_TOKEN, b, B_TOKEN))
    return SimpleNamespace(url=url, a=a, b=b, a_project=projects[a], b_project=projects[b])


def _insert(conn: psycopg.Connection, project: str, task_type: str = "ping", params: str = "{}",
            status: str = "Queued", **columns) -> str:
    names = ["task_type", "params", "status", "project_id", *columns]
    values = [task_type, params, status, project, *columns.values()]
    return str(conn.execute(f"INSERT INTO tasks ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(values))}) "
                            "RETURNING id", values).fetchone()[0])


def _parked_orchestrator(url: str, project: str) -> str:
    """A's travel orchestrator as a worker leaves it after creating its children: In Progress, parked."""
    with connect(url) as conn:
        return _insert(conn, project, "travel_orchestrator", status="In Progress", worker_id="a-worker",
                       awaiting_children=True)


def _row(url: str, task_id: str) -> dict:
    with connect(url) as conn:
        conn.row_factory = psycopg.rows.dict_row
        return conn.execute("SELECT status::text AS status, error_message, output_location, result, "
                            "blocked_by_dependency, project_id::text AS project_id FROM tasks WHERE id = %s",
                            (task_id,)).fetchone()


def _service_worker(url: str, out: Path) -> None:
    result = run_worker(out / "unused.db", out, "--db-type", "supabase", "--once", env={"SUPABASE_DB_URL": url})
    assert result.returncode == 0, result.stderr[-3000:]


def test_b_cannot_attach_a_row_to_as_orchestrator_nor_learn_whether_it_exists(tenants, tmp_path):
    orchestrator = _parked_orchestrator(tenants.url, tenants.a_project)
    with as_role(tenants.url, "authenticated", tenants.b) as conn:
        refusals = {}
        for name, parent in (("A's orchestrator", orchestrator), ("no such row", str(uuid4()))):
            with pytest.raises(errors.ForeignKeyViolation) as refused:
                _insert(conn, tenants.b_project, "travel_stitch", parent_task_id=parent)
            refusals[name] = str(refused.value).split("\n")[0].replace(parent, "<id>")
        with pytest.raises(errors.ForeignKeyViolation):  # A's derived child id, as that child
            _insert(conn, tenants.b_project, id=child_task_id(orchestrator, "segment_000"), child_key="segment_000",
                    parent_task_id=orchestrator)
        with pytest.raises(errors.CheckViolation, match="child_key needs a parent_task_id"):
            _insert(conn, tenants.b_project, child_key="segment_000")
    assert refusals["A's orchestrator"] == refusals["no such row"] == (
        "parent_task_id <id> names no task of this row's project")
    with as_role(tenants.url, "authenticated", tenants.a) as conn:  # A's own link is honoured
        own = _parked_orchestrator(tenants.url, tenants.a_project)
        _insert(conn, tenants.a_project, "travel_stitch", parent_task_id=own)
    assert _row(tenants.url, orchestrator)["status"] == "In Progress"


def test_rows_linked_across_projects_before_the_upgrade_neither_finish_nor_fail_the_other_tenants_parent(
        tenants, tmp_path):
    """Links a table held before the trigger existed: the worker and the cascade still honour none of them."""
    orchestrator = _parked_orchestrator(tenants.url, tenants.a_project)
    with connect(tenants.url) as conn:
        conn.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_check_links")
        unknown = _insert(conn, tenants.b_project, "b_made_this_up", params='{"text": "B was here"}',
                          parent_task_id=orchestrator)
        stitch = _insert(conn, tenants.b_project, "ping", parent_task_id=orchestrator)
        conn.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_check_links")
    _service_worker(tenants.url, tmp_path / "out")

    assert _row(tenants.url, stitch)["error_message"] == (
        f"parent_task_id {orchestrator} names no task of this row's project")
    assert _row(tenants.url, unknown)["status"] == "Failed"
    parent = _row(tenants.url, orchestrator)
    assert (parent["status"], parent["error_message"], parent["output_location"]) == ("In Progress", None, None)
    store = PostgresTaskStore(tenants.url)
    try:
        assert store.list_child_tasks(orchestrator) == []
    finally:
        store.close()


def test_as_chain_does_not_adopt_a_row_b_put_at_its_derived_child_id(tenants):
    orchestrator = _parked_orchestrator(tenants.url, tenants.a_project)
    squatted = child_task_id(orchestrator, "segment_000")
    with as_role(tenants.url, "authenticated", tenants.b) as conn:
        _insert(conn, tenants.b_project, id=squatted)
    store = PostgresTaskStore(tenants.url)
    try:
        with pytest.raises(TaskError, match=f"child id {squatted} is already taken"):
            store.add_child_tasks(orchestrator, [
                NewTask("ping", {}, child_key="segment_000", project_id=tenants.a_project),
                NewTask("ping", {}, child_key="segment_001", project_id=tenants.a_project)])
        assert store.list_child_tasks(orchestrator) == []  # all or nothing: segment_001 was not created either
        # a child's payload cannot move it to another project
        own = _parked_orchestrator(tenants.url, tenants.a_project)
        (child,) = store.add_child_tasks(own, [NewTask("ping", {}, child_key="k", project_id=tenants.b_project)])
        assert _row(tenants.url, child)["project_id"] == tenants.a_project
    finally:
        store.close()
    assert _row(tenants.url, squatted)["project_id"] == tenants.b_project


def test_b_reads_none_of_as_outputs_and_none_of_as_errors(tenants, tmp_path):
    from source.media.write import write_video

    out = tmp_path / "out"
    out.mkdir()
    video = write_video(np.stack([np.full((32, 48, 3), 0.5)] * 5), out / "a_segment.mp4", 8)
    with connect(tenants.url) as conn:
        done = _insert(conn, tenants.a_project, status="Complete", output_location=str(video))
        failed = _insert(conn, tenants.a_project, status="Failed", error_message="A's secret: the prompt was X")
    unknown = str(uuid4())
    with as_role(tenants.url, "authenticated", tenants.b) as conn:
        frame_of_a = _insert(conn, tenants.b_project, "extract_frame", params=f'{{"input_video_task_id": "{done}"}}')
        frame_of_none = _insert(conn, tenants.b_project, "extract_frame",
                                params=f'{{"input_video_task_id": "{unknown}"}}')
        after_done = _insert(conn, tenants.b_project, dependant_on=done)
        after_failed = _insert(conn, tenants.b_project, dependant_on=failed)
        after_none = _insert(conn, tenants.b_project, dependant_on=unknown)
    assert _row(tenants.url, after_done)["blocked_by_dependency"]  # A's Complete row does not unblock B's
    _service_worker(tenants.url, out)

    def shape(task_id: str, other: str) -> tuple[str, str]:
        row = _row(tenants.url, task_id)
        return row["status"], (row["error_message"] or "").replace(other, "<id>")

    assert shape(frame_of_a, done) == shape(frame_of_none, unknown) == (
        "Failed", "params.input_video_task_id: no task with id '<id>'")
    assert _row(tenants.url, after_done)["status"] == "Queued"  # still waiting, as for a row that does not exist
    with connect(tenants.url) as conn:  # past the minute a missing dependency is given to appear
        conn.execute("UPDATE tasks SET created_at = now() - interval '2 minutes' WHERE id = ANY (%s::uuid[])",
                     ([after_done, after_failed, after_none],))
    store = PostgresTaskStore(tenants.url)
    try:
        store.fail_orphaned_dependants()
    finally:
        store.close()
    assert shape(after_done, done) == shape(after_failed, failed) == shape(after_none, unknown) == (
        "Failed", "dependency <id> does not exist")


def test_a_token_fails_no_other_tenants_running_row(tenants):
    with connect(tenants.url) as conn:
        a_row = _insert(conn, tenants.a_project, status="In Progress", worker_id="a-box",
                        claimed_at="now", lease_expires_at="infinity")
    with as_role(tenants.url, "anon") as conn:
        for worker_id in ("a-box", "never-registered"):
            assert conn.execute("SELECT user_fail_undecodable_claim(%s, %s, 'B says so')",
                                (B_TOKEN, worker_id)).fetchone()[0] is None
        assert _row(tenants.url, a_row)["status"] == "In Progress"
        assert conn.execute("SELECT user_fail_undecodable_claim(%s, 'a-box', 'undecodable')",
                            (A_TOKEN,)).fetchone()[0] == a_row  # A's own token still reaches A's own row
    assert _row(tenants.url, a_row)["error_message"] == "undecodable"


def test_a_tokens_housekeeping_turns_do_not_hold_the_fleets(tenants, tmp_path):
    """B loops the turn with an interval of 0 and never does the job; a dead worker's row is still put back by
    the service worker and completed."""
    stop = threading.Event()

    def hold_the_turn() -> None:
        with as_role(tenants.url, "anon") as conn:
            while not stop.is_set():
                conn.execute("SELECT user_tasks_housekeeping_turn(%s, 'leases', 0, 'evil')", (B_TOKEN,))

    holder = threading.Thread(target=hold_the_turn, daemon=True)
    holder.start()
    out = tmp_path / "out"
    worker = start_worker(out / "unused.db", out, "--db-type", "supabase", "--worker", "service-1",
                          "--poll-interval", "0.5", "--lease-seconds", "2", env={"SUPABASE_DB_URL": tenants.url})
    try:
        with connect(tenants.url) as conn:
            wait_for(lambda: conn.execute("SELECT count(*) FROM workers WHERE id = 'service-1'").fetchone()[0], 60)
            dead = _insert(conn, tenants.a_project, status="In Progress", worker_id="dead-box", attempts=1,
                           lease_expires_at="2000-01-01")
        wait_for(lambda: _row(tenants.url, dead)["status"] == "Complete", 30, 0.2)
    finally:
        stop.set()
        holder.join(10)
        worker.terminate()
        worker.wait(30)


def test_tokens_are_minted_only_from_a_plain_token(tenants):
    with as_role(tenants.url, "authenticated", tenants.b) as conn:
        with pytest.raises(errors.InsufficientPrivilege, match="token_hash is computed"):
            conn.execute("INSERT INTO user_api_tokens (user_id, token_hash) VALUES (%s, %s)",
                         (tenants.b, hashlib.sha256(b"minted").hexdigest()))
        conn.execute("INSERT INTO user_api_tokens (user_id, token) VALUES (%s, 'pat_b_second')", (tenants.b,))
        assert conn.execute("SELECT token, token_hash FROM user_api_tokens WHERE token_hash = %s",
                            (hashlib.sha256(b"pat_b_second").hexdigest(),)).fetchone()[0] is None
    with as_role(tenants.url, "anon") as conn:
        assert conn.execute("SELECT user_tasks_schema_version('pat_b_second')").fetchone()[0] >= 31
        with pytest.raises(errors.InvalidAuthorizationSpecification):
            conn.execute("SELECT user_tasks_schema_version('minted')")


def test_wake_functions_answer_only_for_the_tokens_own_workers(tenants):
    with as_role(tenants.url, "anon") as conn:
        assert conn.execute("SELECT user_register_worker(%s, 'a-box')", (A_TOKEN,)).fetchone()[0]
        assert conn.execute("SELECT user_tasks_worker_channel(%s, 'a-box')", (A_TOKEN,)).fetchone()[0]
        conn.execute("SELECT user_worker_woken(%s, 'a-box')", (A_TOKEN,))
    for function in ("user_worker_woken", "user_tasks_worker_channel"):
        with as_role(tenants.url, "anon") as conn, pytest.raises(errors.InsufficientPrivilege,
                                                                  match="registered by another user"):
            conn.execute(f"SELECT {function}(%s, 'a-box')", (B_TOKEN,))


def test_a_tenants_own_priority_and_clock_cannot_jump_the_queue(tenants):
    """The fairness rule: a signed-in producer's rows take the server's clock and a priority of at most 10."""
    with as_role(tenants.url, "authenticated", tenants.a) as conn:
        first = _insert(conn, tenants.a_project, priority=10)
    with as_role(tenants.url, "authenticated", tenants.b) as conn:
        jumper = _insert(conn, tenants.b_project, priority=2**31 - 1, created_at="1970-01-01")
    with connect(tenants.url) as conn:
        priority, created = conn.execute("SELECT priority, created_at > now() - interval '1 minute' FROM tasks "
                                         "WHERE id = %s", (jumper,)).fetchone()
        assert (priority, created) == (10, True)
        order = [str(conn.execute("SELECT id FROM claim_next_task('w')").fetchone()[0]) for _ in range(2)]
        service = _insert(conn, tenants.a_project, priority=50)  # the service side is trusted with any value
        assert conn.execute("SELECT priority FROM tasks WHERE id = %s", (service,)).fetchone()[0] == 50
    assert order == [first, jumper]
