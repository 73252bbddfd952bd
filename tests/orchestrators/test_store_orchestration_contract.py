"""The store verbs of orchestrated workflows, over every backend registered in tests/conftest.py."""

from __future__ import annotations

import time
from uuid import uuid4

import pytest

from source.db.models import CascadeKind, NewTask, TaskStatus, child_task_id
from source.errors import TaskError


def claim(store, worker="w1", lease_seconds=30.0):
    return store.claim_next_task(worker, lease_seconds=lease_seconds)


def running_parent(store, worker="w1"):
    parent = store.add_task(NewTask("travel_orchestrator", {}))
    assert claim(store, worker).id == parent
    return parent


def chain(keys):
    children, previous = [], None
    for key in keys:
        children.append((key, previous))
        previous = key
    return children


def add_chain(store, parent, keys=("a", "b", "c")):
    return store.add_child_tasks(parent, [
        NewTask("ping", {"key": key}, child_key=key,
                dependant_on=child_task_id(parent, after) if after else None)
        for key, after in chain(keys)
    ])


def test_children_are_inserted_once_with_derived_ids_whatever_runs_again(store):
    parent = running_parent(store)
    ids = add_chain(store, parent)
    assert ids == [child_task_id(parent, k) for k in ("a", "b", "c")]
    again = store.add_child_tasks(parent, [NewTask("ping", {"other": 1}, child_key="a", id=str(uuid4())),
                                           NewTask("ping", {}, child_key="d")])
    assert again == [ids[0], child_task_id(parent, "d")]
    rows = store.list_child_tasks(parent)
    assert [r.child_key for r in rows] == ["a", "b", "c", "d"]
    assert rows[0].params() == {"key": "a"} and rows[0].parent_task_id == parent
    assert rows[1].dependant_on == ids[0] and rows[2].dependant_on == ids[1]
    assert len(store.list_tasks(limit=100)) == 5


def test_parked_parent_keeps_in_progress_without_lease_and_is_never_reclaimed(store):
    parent = running_parent(store, "w1")
    assert not store.park_awaiting_children(parent, "someone-else")
    assert store.park_awaiting_children(parent, "w1", result={"child_task_ids": ["x"]})
    row = store.get_task(parent)
    assert (row.status, row.awaiting_children, row.lease_expires_at) == (TaskStatus.IN_PROGRESS, True, None)
    assert row.result["child_task_ids"] == ["x"]
    short = store.add_task(NewTask("ping", {}))
    assert claim(store, "w2", lease_seconds=0.05).id == short
    time.sleep(0.2)
    assert {r.task_id for r in store.reclaim_expired_leases()} == {short}
    assert store.get_task(parent).status is TaskStatus.IN_PROGRESS


def test_a_child_completes_its_parent_once_merging_results(store):
    parent = running_parent(store)
    assert store.park_awaiting_children(parent, "w1", result={"run_id": "r"})
    assert store.complete_parent(parent, output_location="/out/final.mp4", result={"frames": 14})
    row = store.get_task(parent)
    assert (row.status, row.output_location, row.awaiting_children) == (TaskStatus.COMPLETE, "/out/final.mp4", False)
    assert row.result["run_id"] == "r" and row.result["frames"] == 14
    assert not store.complete_parent(parent, output_location="/elsewhere", result={})
    assert not store.park_awaiting_children(parent, "w1")


def test_failed_child_fails_the_parent_naming_it_and_cancels_the_other_children(store):
    parent = running_parent(store)
    first, second, third = add_chain(store, parent)
    sibling = store.add_child_tasks(parent, [NewTask("ping", {}, child_key="independent")])[0]
    assert store.park_awaiting_children(parent, "w1")
    assert claim(store).id == first
    assert store.fail_task(first, "w1", error_message="boom")
    cascade = store.fail_orphaned_dependants()
    kinds = {(c.task_id, c.kind) for c in cascade}
    assert (second, CascadeKind.DEPENDENCY) in kinds and (parent, CascadeKind.CHILD) in kinds
    assert (sibling, CascadeKind.PARENT) in kinds
    row = store.get_task(parent)
    assert row.status is TaskStatus.FAILED and row.error_message == f"child ping {first} ended Failed: boom"
    assert store.get_task(second).error_message.startswith(f"dependency {first} ended Failed")
    assert store.get_task(third).status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
    assert store.get_task(sibling).status is TaskStatus.CANCELLED
    assert store.list_tasks(status=TaskStatus.QUEUED) == []


def test_cancelling_a_parent_cancels_queued_and_running_children_and_theirs(store):
    parent = running_parent(store)
    first, second, _ = add_chain(store, parent)
    assert store.park_awaiting_children(parent, "w1")
    assert claim(store).id == first  # running
    grandchild = store.add_child_tasks(second, [NewTask("ping", {}, child_key="g")])[0]
    done = store.add_task(NewTask("ping", {}))
    assert store.cancel_task(parent)
    statuses = {r.id: r.status for r in store.list_tasks(limit=100)}
    assert statuses[parent] is TaskStatus.CANCELLED and statuses[done] is TaskStatus.QUEUED
    assert all(statuses[c] is TaskStatus.CANCELLED for c in (first, second, grandchild))
    assert store.get_task(first).error_message == f"parent {parent} ended Cancelled: cancelled by request"


def test_retrying_a_failed_parent_requeues_its_ended_children_and_keeps_the_complete_ones(store):
    parent = running_parent(store)
    first, second, third = add_chain(store, parent)
    assert store.park_awaiting_children(parent, "w1")
    assert claim(store).id == first
    assert store.complete_task(first, "w1", output_location="/out/a", result=None)
    assert claim(store).id == second
    assert store.fail_task(second, "w1", error_message="boom")
    store.fail_orphaned_dependants()
    assert store.get_task(parent).status is TaskStatus.FAILED
    assert store.retry_task(parent)
    statuses = {r.id: r.status for r in store.list_tasks(limit=100)}
    assert statuses == {parent: TaskStatus.QUEUED, first: TaskStatus.COMPLETE, second: TaskStatus.QUEUED,
                        third: TaskStatus.QUEUED}
    assert store.get_task(second).error_message is None and not store.get_task(parent).awaiting_children
    assert store.fail_orphaned_dependants() == []  # nothing left to cascade: the chain can run again


def test_links_between_rows_hold_only_inside_one_project(store, request):
    """Tenants share one queue (docs/security.md): another project's row is, to a link, a row that does not
    exist; children land in their parent's project; a row squatting a derived child id stops the chain."""
    if "adopted" in request.node.name:
        pytest.skip("the older web app's project_id is a uuid referencing projects: tests/postgres/"
                    "test_tenant_isolation.py runs these cases there, as two signed-in users")
    dependency = store.add_task(NewTask("ping", {}, project_id="project-a"))
    assert claim(store).id == dependency
    assert store.complete_task(dependency, "w1", output_location="/out/a.png", result={})
    theirs = store.add_task(NewTask("ping", {}, dependant_on=dependency, project_id="project-b"))
    mine = store.add_task(NewTask("ping", {}, dependant_on=dependency, project_id="project-a"))
    assert claim(store).id == mine
    assert claim(store) is None  # B's row waits, as on a dependency that does not exist
    assert store.get_task(theirs).status is TaskStatus.QUEUED

    parent = store.add_task(NewTask("travel_orchestrator", {}, project_id="project-a", priority=9))
    assert claim(store).id == parent
    (child,) = store.add_child_tasks(parent, [NewTask("ping", {}, child_key="a", project_id="project-b")])
    assert store.get_task(child).project_id == "project-a"
    squatter = store.add_task(NewTask("ping", {}, id=child_task_id(parent, "b"), project_id="project-b"))
    with pytest.raises(TaskError, match=f"child id {squatter} is already taken by a row that is not that child"):
        store.add_child_tasks(parent, [NewTask("ping", {}, child_key="c"), NewTask("ping", {}, child_key="b")])
    assert [row.child_key for row in store.list_child_tasks(parent)] == ["a"]
