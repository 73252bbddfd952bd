"""The guest store's verbs on Reigh's rows: what it claims (Reigh's gpu types it runs, for users Reigh
serves, dependencies all Complete), how it passes Reigh's triggers, and what completion leaves behind."""

from __future__ import annotations

import json
import threading
from uuid import UUID

import psycopg
import pytest

from source.db.models import Capabilities, NewTask, TaskStatus, WorkerInfo, child_task_id
from source.db.reigh_guest import ReighGuestStore, reigh_schema_of
from source.routing import known_task_types
from tests.reigh.conftest import ReighUser, add_reigh_user, insert_reigh_task
from tests.reigh.reigh_checks import as_service_role

pytestmark = pytest.mark.postgres
LEASE = 30.0


def _row(url: str, task_id: object, columns: str = "status::text") -> tuple:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(f"SELECT {columns} FROM tasks WHERE id = %s", (str(task_id),)).fetchone()


def _claim_all(store: ReighGuestStore, worker: str = "w1") -> list[str]:
    claimed = []
    while (task := store.claim_next_task(worker, lease_seconds=LEASE)) is not None:
        claimed.append(task.id)
    return claimed


def _service(url: str, statement: str, *args: object) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        as_service_role(conn)
        cur = conn.execute(statement, args)
        return cur.fetchall() if cur.description else []


def test_only_gpu_task_types_this_worker_runs_are_claimed(guest_store, reigh_url):
    user = add_reigh_user(reigh_url)
    api = insert_reigh_task(reigh_url, user.project_id, "qwen_image", {"prompt": "api"})
    not_ours = insert_reigh_task(reigh_url, user.project_id, "animate_character", {"prompt": "gpu, not routed"})
    ours = insert_reigh_task(reigh_url, user.project_id, "wan_2_2_t2i", {"prompt": "ours"})
    assert _claim_all(guest_store) == [str(ours)]
    assert _row(reigh_url, api) == ("Queued",) and _row(reigh_url, not_ours) == ("Queued",)
    assert not guest_store.has_claimable_task()


def _owner_with_rows(url: str, **user: object) -> tuple[ReighUser, UUID]:
    owner = add_reigh_user(url, **user)
    return owner, insert_reigh_task(url, owner.project_id, "t2v", {"prompt": "x"})


def test_users_reigh_would_not_serve_are_not_served(guest_store, reigh_url):
    """0 credits, cloud generation switched off, 5 rows already In Progress: Reigh's claim serves none of
    them, nor does the guest; the same rows Reigh's own claim function serves are the ones the guest does."""
    broke, broke_row = _owner_with_rows(reigh_url, credits=0)
    local, local_row = _owner_with_rows(reigh_url, in_cloud=False)
    busy = add_reigh_user(reigh_url)
    for _ in range(5):
        insert_reigh_task(reigh_url, busy.project_id, "t2v", {"prompt": "running"})
    _service(reigh_url, "UPDATE tasks SET status = 'In Progress' WHERE project_id = %s", busy.project_id)
    busy_row = insert_reigh_task(reigh_url, busy.project_id, "t2v", {"prompt": "sixth"})
    served, served_row = _owner_with_rows(reigh_url)

    with psycopg.connect(reigh_url) as conn:  # Reigh's own answer, rolled back
        as_service_role(conn)
        conn.execute("INSERT INTO workers (id, instance_type) VALUES ('probe', 'external')")
        reighs = conn.execute("SELECT task_id FROM claim_next_task_service_role('probe', false, 'gpu')").fetchall()
        conn.rollback()
    assert reighs == [(served_row,)]
    assert _claim_all(guest_store) == [str(served_row)]
    for row in (broke_row, local_row, busy_row):
        assert _row(reigh_url, row) == ("Queued",)


def test_dependant_on_waits_for_every_dependency_and_fails_when_any_failed(guest_store, reigh_url):
    user = add_reigh_user(reigh_url)
    first = insert_reigh_task(reigh_url, user.project_id, "t2v", {"prompt": "1"})
    second = insert_reigh_task(reigh_url, user.project_id, "t2v", {"prompt": "2"})
    both = insert_reigh_task(reigh_url, user.project_id, "t2v", {"prompt": "after both"}, dependant_on=[first, second])
    doomed = insert_reigh_task(reigh_url, user.project_id, "t2v", {"prompt": "after a failure"},
                               dependant_on=[first, second])
    one = guest_store.claim_next_task("w1", lease_seconds=LEASE)
    assert one.id == str(first)
    assert guest_store.complete_task(one.id, "w1", output_location="/out/1.mp4", result=None)
    two = guest_store.claim_next_task("w1", lease_seconds=LEASE)
    assert two.id == str(second)  # not `both`: its second dependency is not Complete yet
    assert guest_store.complete_task(two.id, "w1", output_location="/out/2.mp4", result=None)
    after = guest_store.claim_next_task("w1", lease_seconds=LEASE)
    assert after.id in (str(both), str(doomed))
    assert guest_store.fail_task(after.id, "w1", error_message="boom")
    # a row depending on the failed one, and on a Complete one, fails naming it
    late = insert_reigh_task(reigh_url, user.project_id, "t2v", {"prompt": "late"}, dependant_on=[first, UUID(after.id)])
    cascade = guest_store.fail_orphaned_dependants()
    assert [(c.task_id, c.dependency_id, c.kind.value) for c in cascade] == [(str(late), after.id, "dependency")]
    assert _row(reigh_url, late, "status::text, error_message") == ("Failed", f"dependency {after.id} ended Failed: boom")


def test_links_across_projects_and_missing_dependencies_are_failed_not_followed(guest_store, reigh_url):
    alice, bob = add_reigh_user(reigh_url), add_reigh_user(reigh_url)
    bobs = insert_reigh_task(reigh_url, bob.project_id, "t2v", {"prompt": "bob"})
    _service(reigh_url, "UPDATE tasks SET status = 'Complete' WHERE id = %s", bobs)
    crossing = insert_reigh_task(reigh_url, alice.project_id, "t2v", {"prompt": "x"}, dependant_on=[bobs])
    missing = UUID(int=7)
    dangling = insert_reigh_task(reigh_url, alice.project_id, "t2v", {"prompt": "y"}, dependant_on=[missing])
    assert guest_store.claim_next_task("w1", lease_seconds=LEASE) is None
    failed = {u.task_id: u.reason for u in guest_store.fail_unrunnable_tasks()}
    assert failed == {str(crossing): f"dependency {bobs} belongs to another project",
                      str(dangling): f"dependency {missing} does not exist"}


def test_claim_and_completion_pass_reighs_timing_trigger_and_leave_its_timestamps(guest_store, reigh_url):
    user = add_reigh_user(reigh_url)
    task_id = insert_reigh_task(reigh_url, user.project_id, "t2v", {"prompt": "x"})
    task = guest_store.claim_next_task("w1", lease_seconds=LEASE)
    started, worker = _row(reigh_url, task_id, "generation_started_at, worker_id")
    assert started is not None and worker == "w1"
    assert guest_store.complete_task(task.id, "w1", output_location="/out/x.mp4", result={"seed": 1})
    status, processed, location = _row(reigh_url, task_id, "status::text, generation_processed_at, output_location")
    assert (status, location) == ("Complete", "/out/x.mp4") and processed >= started
    # the trigger itself is still there for everyone else
    with pytest.raises(psycopg.errors.RaiseException, match="Timing fields"), \
            psycopg.connect(reigh_url, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET generation_started_at = now() WHERE id = %s", (task_id,))


def _shot(url: str, project_id: UUID) -> UUID:
    return _service(url, "INSERT INTO shots (name, project_id) VALUES ('shot', %s) RETURNING id", project_id)[0][0]


def test_completion_leaves_a_generation_its_variant_the_shot_placement_and_one_bill(guest_store, reigh_url):
    user = add_reigh_user(reigh_url, credits=10)
    shot = _shot(reigh_url, user.project_id)
    task_id = insert_reigh_task(reigh_url, user.project_id, "wan_2_2_t2i", {"prompt": "x", "shot_id": str(shot)})
    task = guest_store.claim_next_task("w1", lease_seconds=LEASE)
    assert guest_store.complete_task(task.id, "w1", output_location="https://cdn/x.png", result=None)
    with psycopg.connect(reigh_url, autocommit=True) as conn:
        generation = conn.execute("SELECT id, tasks, location, type, primary_variant_id FROM generations").fetchall()
        assert len(generation) == 1
        gen_id, tasks, location, kind, primary = generation[0]
        assert (tasks, location, kind) == ([str(task_id)], "https://cdn/x.png", "image")
        assert conn.execute("SELECT id, is_primary, variant_type, location FROM generation_variants "
                            "WHERE generation_id = %s", (gen_id,)).fetchall() == [(primary, True, "original", location)]
        assert conn.execute("SELECT shot_id, timeline_frame FROM shot_generations WHERE generation_id = %s",
                            (gen_id,)).fetchall() == [(shot, 0)]
        assert conn.execute("SELECT generation_created FROM tasks WHERE id = %s", (task_id,)).fetchone() == (True,)
        spend = conn.execute("SELECT amount, metadata->>'billing_type' FROM credits_ledger WHERE task_id = %s "
                             "AND type = 'spend'", (task_id,)).fetchall()
        assert len(spend) == 1 and spend[0][0] < 0 and spend[0][1] == "per_second"
        credits = conn.execute("SELECT credits FROM users WHERE id = %s", (user.id,)).fetchone()[0]
        assert credits == 10 + spend[0][0]  # the ledger moved the balance, through Reigh's own trigger


def test_a_row_reigh_cancels_stops_its_heartbeat_and_cannot_be_completed(guest_store, reigh_url):
    user = add_reigh_user(reigh_url)
    insert_reigh_task(reigh_url, user.project_id, "t2v", {"prompt": "x"})
    task = guest_store.claim_next_task("w1", lease_seconds=LEASE)
    assert guest_store.heartbeat(task.id, "w1", lease_seconds=LEASE, progress=0.5)
    _service(reigh_url, "UPDATE tasks SET status = 'Cancelled' WHERE id = %s", task.id)
    assert not guest_store.heartbeat(task.id, "w1", lease_seconds=LEASE)
    assert not guest_store.complete_task(task.id, "w1", output_location="/x.mp4", result=None)
    assert guest_store.task_status(task.id) == (TaskStatus.CANCELLED, "w1")


def test_an_expired_lease_gives_the_row_back_and_a_retry_waits_out_its_delay(guest_store, reigh_url):
    user = add_reigh_user(reigh_url)
    task_id = insert_reigh_task(reigh_url, user.project_id, "t2v", {"prompt": "x"})
    task = guest_store.claim_next_task("dead", lease_seconds=0.01)
    threading.Event().wait(0.05)
    assert [(r.task_id, r.new_status) for r in guest_store.reclaim_expired_leases()] == [(task.id, TaskStatus.QUEUED)]
    assert _row(reigh_url, task_id, "status::text, worker_id, generation_started_at") == ("Queued", None, None)
    again = guest_store.claim_next_task("w2", lease_seconds=LEASE)
    assert (again.id, again.attempts) == (task.id, 2)
    assert guest_store.retry_later(again.id, "w2", error_message="busy", delay_seconds=60) is TaskStatus.QUEUED
    assert guest_store.claim_next_task("w2", lease_seconds=LEASE) is None  # not before its delay
    with psycopg.connect(reigh_url, autocommit=True) as conn:
        conn.execute(f'UPDATE "{guest_store.guest_schema}".task_state SET retry_at = now() WHERE task_id = %s',
                     (task_id,))
    assert guest_store.claim_next_task("w2", lease_seconds=LEASE).id == task.id


def test_two_guests_never_claim_the_same_row(guest_store, reigh_url):
    user = add_reigh_user(reigh_url)
    for i in range(4):  # Reigh serves a user at most 5 rows at once: claims below stay under that
        insert_reigh_task(reigh_url, user.project_id, "t2v", {"prompt": str(i)})
    other = ReighGuestStore(reigh_url, str(reigh_schema_of(reigh_url)), runnable_task_types=known_task_types())
    claimed: list[str] = []

    def drain(store: ReighGuestStore, worker: str) -> None:
        claimed.extend(_claim_all(store, worker))

    try:
        threads = [threading.Thread(target=drain, args=(s, w)) for s, w in ((guest_store, "a"), (other, "b"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.close()
    assert len(claimed) == 4 and len(set(claimed)) == 4


def _travel_children(store: ReighGuestStore, parent_id: str, extra: dict) -> tuple[str, str]:
    first, stitch = store.add_child_tasks(parent_id, [
        NewTask("travel_segment", {"segment_index": 0, **extra}, child_key="segment_000"),
        NewTask("travel_stitch", extra, child_key="stitch", dependant_on=child_task_id(parent_id, "segment_000"))])
    assert store.park_awaiting_children(parent_id, "w1")
    for child_id in (first, stitch):
        child = store.claim_next_task("w1", lease_seconds=LEASE)
        assert child.id == child_id and child.params()["orchestrator_task_id_ref"] == parent_id
        assert store.complete_task(child.id, "w1", output_location=f"/out/{child.id}.mp4", result=None)
    return first, stitch


def test_an_orchestrator_completes_reighs_way_billed_for_its_children(guest_store, reigh_url):
    user = add_reigh_user(reigh_url, credits=10)
    parent_id = insert_reigh_task(reigh_url, user.project_id, "travel_orchestrator",
                                  {"orchestrator_details": {"orchestrator_task_id": "travel-1", "model_name": "tiny_vace"}})
    parent = guest_store.claim_next_task("w1", lease_seconds=LEASE)
    assert parent.id == str(parent_id)
    first, stitch = _travel_children(guest_store, parent.id, {})
    assert _row(reigh_url, parent.id) == ("In Progress",)  # parked, as Reigh's orchestrators wait
    assert {t.project_id for t in guest_store.list_child_tasks(parent.id)} == {str(user.project_id)}
    assert guest_store.complete_parent(parent.id, output_location=f"/out/{stitch}.mp4", result={"segments": 1})
    with psycopg.connect(reigh_url, autocommit=True) as conn:
        bills = conn.execute("SELECT task_id, metadata->>'duration_seconds' FROM credits_ledger WHERE type = 'spend'"
                             ).fetchall()
        made = conn.execute("SELECT tasks->>0, is_child FROM generations").fetchall()
    assert bills == [(UUID(parent.id), "2")]  # sub-tasks are not billed; the parent for their seconds
    # complete-task's routing for a batch travel (no parent generation named): a standalone generation per
    # segment and for the stitch, none for the orchestrator (category orchestration)
    assert sorted(made) == sorted([(first, False), (stitch, False)])
    assert json.loads(guest_store.get_task(parent.id).result_json)["segments"] == 1


def test_a_travel_into_a_parent_generation_adds_children_and_the_stitch_as_its_variant(guest_store, reigh_url):
    user = add_reigh_user(reigh_url, credits=10)
    parent_generation = _service(reigh_url, "INSERT INTO generations (project_id, type, location) "
                                            "VALUES (%s, 'video', NULL) RETURNING id", user.project_id)[0][0]
    # the shot's parent generation, where travelBetweenImages puts it: children inherit it from their parent
    insert_reigh_task(reigh_url, user.project_id, "travel_orchestrator",
                      {"orchestrator_details": {"parent_generation_id": str(parent_generation)}})
    parent = guest_store.claim_next_task("w1", lease_seconds=LEASE)
    first, stitch = _travel_children(guest_store, parent.id, {})
    with psycopg.connect(reigh_url, autocommit=True) as conn:
        child = conn.execute("SELECT parent_generation_id, is_child, child_order FROM generations "
                             "WHERE tasks ? %s", (first,)).fetchall()
        primary = conn.execute("SELECT g.location, v.variant_type FROM generations g JOIN generation_variants v "
                               "ON v.id = g.primary_variant_id WHERE g.id = %s", (parent_generation,)).fetchone()
    assert child == [(parent_generation, True, 0)]
    assert primary == (f"/out/{stitch}.mp4", "travel_stitch")  # task_types.variant_type


def test_operators_read_reighs_queue_but_leave_its_rows_to_reigh(guest_store, reigh_url):
    user = add_reigh_user(reigh_url)
    insert_reigh_task(reigh_url, user.project_id, "t2v", {"prompt": "x", "model_name": "tiny_t2v"})
    insert_reigh_task(reigh_url, user.project_id, "qwen_image", {"prompt": "api"})
    assert guest_store.stats().by_status == {"Queued": 2}
    assert [(k.task_type, k.model, k.count) for k in guest_store.queued_kinds()] == [("t2v", "tiny_t2v", 1)]
    assert {t.task_type for t in guest_store.list_tasks(status=TaskStatus.QUEUED)} == {"t2v", "qwen_image"}
    with pytest.raises(PermissionError, match="the rows are Reigh's"):
        guest_store.add_task(NewTask("t2v", {"prompt": "mine"}))


def test_task_type_and_model_restrictions_narrow_the_claim_on_reighs_model_field(guest_store, reigh_url):
    user = add_reigh_user(reigh_url)
    vace = insert_reigh_task(reigh_url, user.project_id, "travel_orchestrator",
                             {"orchestrator_details": {"model_name": "tiny_vace"}})
    other = insert_reigh_task(reigh_url, user.project_id, "t2v", {"prompt": "x", "model_name": "tiny_t2v"})
    only_vace = Capabilities(task_types=("travel_orchestrator",), models=("tiny_vace",), modelless_task_types=())
    assert not guest_store.has_claimable_task(Capabilities(models=("tiny_flux",), modelless_task_types=()))
    assert guest_store.claim_next_task("w1", lease_seconds=LEASE, capabilities=only_vace).id == str(vace)
    assert guest_store.claim_next_task("w1", lease_seconds=LEASE, capabilities=only_vace) is None
    assert _row(reigh_url, other) == ("Queued",)


def test_the_worker_lives_in_reighs_workers_table(guest_store, reigh_url):
    _service(reigh_url, "INSERT INTO workers (id, instance_type, current_model) VALUES ('reigh-1', 'external', 'm')")
    guest_store.register_worker(WorkerInfo(id="gpu-1", host="box", pid=7, gpu_name="H100", gpu_memory_gb=80.0))
    guest_store.touch_worker("gpu-1", resident_model="tiny_vace", current_task_id=None, stats={"tasks_completed": 3})
    (record,) = guest_store.list_workers(alive_within_seconds=60)  # its own kind only: Reigh's are Reigh's
    assert (record.id, record.host, record.pid, record.resident_model, record.alive) == ("gpu-1", "box", 7,
                                                                                        "tiny_vace", True)
    assert record.stats == {"tasks_completed": 3}
    assert _service(reigh_url, "SELECT instance_type, status, current_model FROM workers ORDER BY id") == [
        ("wangp", "active", "tiny_vace"), ("external", "active", "m")]
    guest_store.touch_worker("gpu-1", resident_model=None, current_task_id=None, status="stopped")
    assert _service(reigh_url, "SELECT status FROM workers WHERE id = 'gpu-1'") == [("inactive",)]


def test_webhook_outcomes_go_into_the_guests_result_not_reighs_row(guest_store, reigh_url):
    user = add_reigh_user(reigh_url)
    task_id = insert_reigh_task(reigh_url, user.project_id, "t2v", {"prompt": "x"})
    task = guest_store.claim_next_task("w1", lease_seconds=LEASE)
    outcomes = [{"event": "completed", "status": 200}]
    assert not guest_store.record_webhook_deliveries(task.id, "w1", outcomes)  # not while it runs
    assert guest_store.complete_task(task.id, "w1", output_location="/x.mp4", result={"seed": 2})
    before = _row(reigh_url, task_id, "result_data, updated_at")
    assert guest_store.record_webhook_deliveries(task.id, "w1", outcomes)
    assert guest_store.get_task(task.id).result == {"seed": 2, "webhooks": outcomes}
    assert _row(reigh_url, task_id, "result_data, updated_at") == before
