"""The edge-function store's verbs against our stand-in for Reigh's functions (no model: fast): what it refuses to
read across projects, uploads over a signed URL, completions it refuses, retries and give-backs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from source.db.models import NewTask, TaskStatus, child_task_id
from source.db.reigh_edge import EdgeRefused, ReighEdgeStore
from source.db.transient import is_store_outage
from tests.reigh.conftest import add_reigh_user, insert_reigh_task
from tests.reigh.edge_functions import ReighEdgeFunctions, serve
from tests.reigh.test_edge_mode import SERVICE_KEY, image_row, rows, task

pytestmark = pytest.mark.postgres


@pytest.fixture
def edge(reigh_url: str, tmp_path: Path) -> Iterator[ReighEdgeFunctions]:
    functions = ReighEdgeFunctions(reigh_url, SERVICE_KEY, tmp_path / "storage")
    with serve(functions):
        yield functions


def store_for(edge: ReighEdgeFunctions, token: str = SERVICE_KEY, **options) -> ReighEdgeStore:
    store = ReighEdgeStore(edge.base_url, token, **options)
    store.check_schema()
    return store


def output_file(tmp_path: Path, name: str = "out.png", size: int = 64) -> Path:
    path = tmp_path / name
    path.write_bytes(b"\x89PNG" + b"\0" * size)
    return path


def test_a_claimed_row_reads_only_its_own_projects_dependencies_and_children(edge, reigh_url, tmp_path):
    me, stranger = add_reigh_user(reigh_url), add_reigh_user(reigh_url)
    parent = insert_reigh_task(reigh_url, me.project_id, "travel_orchestrator", {"orchestrator_details": {}})
    store = store_for(edge)
    claimed = store.claim_next_task("w1", lease_seconds=10)
    assert claimed is not None and claimed.id == str(parent)
    foreign = insert_reigh_task(reigh_url, stranger.project_id, "wan_2_2_t2i", image_row("theirs"))
    ids = store.add_child_tasks(claimed.id, [NewTask("wan_2_2_t2i", image_row("a"), child_key="a"),
                                             NewTask("wan_2_2_t2i", image_row("b"), child_key="b",
                                                     dependant_on=child_task_id(claimed.id, "a"))])
    assert ids == [child_task_id(claimed.id, "a"), child_task_id(claimed.id, "b")]
    assert store.add_child_tasks(claimed.id, [NewTask("wan_2_2_t2i", image_row("a"), child_key="a")]) == ids[:1]
    assert task(reigh_url, ids[1])["dependant_on"] == [task(reigh_url, ids[0])["id"]]
    # another project's row naming the orchestrator (Reigh's service-role lookup answers for every project)
    intruder = insert_reigh_task(reigh_url, stranger.project_id, "wan_2_2_t2i",
                                 {**image_row("x"), "orchestrator_task_id_ref": claimed.id, "child_key": "a"})
    children = store.list_child_tasks(claimed.id)
    assert [c.id for c in children] == ids and str(intruder) not in {c.id for c in children}
    assert [c.child_key for c in children] == ["a", "b"] and "child_key" not in children[0].params()
    # a row that is neither a dependency nor a parent nor a child of a held row reads as missing
    assert store.get_task(str(foreign)) is None
    assert store.get_task(ids[0]).project_id == str(me.project_id)


def test_a_dependency_in_another_project_reads_as_missing(edge, reigh_url, tmp_path):
    me, stranger = add_reigh_user(reigh_url), add_reigh_user(reigh_url)
    foreign = insert_reigh_task(reigh_url, stranger.project_id, "wan_2_2_t2i", image_row("theirs"))
    with psycopg.connect(reigh_url, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET status = 'Complete', output_location = 'http://x/y.png' WHERE id = %s",
                     (foreign,))
    mine = insert_reigh_task(reigh_url, me.project_id, "wan_2_2_t2i", image_row("mine"), dependant_on=[foreign])
    store = store_for(edge)
    claimed = store.claim_next_task("w1", lease_seconds=10)
    assert claimed is not None and claimed.id == str(mine) and claimed.dependant_on == str(foreign)
    assert store.get_task(str(foreign)) is None  # get-predecessor-output looks within the row's project only


def test_large_outputs_go_through_a_signed_upload_and_complete_by_storage_path(edge, reigh_url, tmp_path):
    user = add_reigh_user(reigh_url)
    task_id = insert_reigh_task(reigh_url, user.project_id, "wan_2_2_t2i", image_row("big"))
    store = store_for(edge, base64_limit_bytes=16)
    claimed = store.claim_next_task("w1", lease_seconds=10)
    out, thumb = output_file(tmp_path), output_file(tmp_path, "thumb.jpg")
    assert store.complete_task(claimed.id, "w1", output_location=str(out), result={"thumbnail": str(thumb)})
    row = task(reigh_url, task_id)
    assert row["status"] == "Complete"
    assert row["output_location"] == f"{edge.base_url}/storage/v1/object/public/image_uploads/{user.id}/tasks/" \
                                     f"{task_id}/out.png"
    names = [name for name, _ in edge.calls]
    assert "generate-upload-url" in names and not any("file_data" in body for _, body in edge.calls)
    generation = rows(reigh_url, "SELECT location, thumbnail_url FROM generations")[0]
    assert generation["location"] == row["output_location"] and "/thumbnails/" in generation["thumbnail_url"]
    assert not out.exists() and not thumb.exists()  # removed after the upload (keep_local off)


def test_a_row_cancelled_while_running_is_not_completed(edge, reigh_url, tmp_path):
    user = add_reigh_user(reigh_url)
    task_id = insert_reigh_task(reigh_url, user.project_id, "wan_2_2_t2i", image_row("cancel me"))
    store = store_for(edge, keep_local=True)
    claimed = store.claim_next_task("w1", lease_seconds=10)
    assert store.heartbeat(claimed.id, "w1", lease_seconds=10)
    assert store.task_status(claimed.id) == (TaskStatus.IN_PROGRESS, "w1")
    assert store_for(edge, user.token)._update_status(claimed.id, TaskStatus.CANCELLED)
    assert not store.heartbeat(claimed.id, "w1", lease_seconds=10)
    out = output_file(tmp_path)
    assert not store.complete_task(claimed.id, "w1", output_location=str(out), result={})
    assert task(reigh_url, task_id)["status"] == "Cancelled"
    assert rows(reigh_url, "SELECT 1 FROM generations") == [] and out.exists()


def test_transient_failures_requeue_the_row_and_the_third_fails_it(edge, reigh_url):
    user = add_reigh_user(reigh_url)
    task_id = insert_reigh_task(reigh_url, user.project_id, "wan_2_2_t2i", image_row("flaky"))
    store = store_for(edge)
    outcomes = []
    for _ in range(3):
        claimed = store.claim_next_task("w1", lease_seconds=10)
        outcomes.append(store.retry_later(claimed.id, "w1", error_message="hub 503", delay_seconds=30))
        row = task(reigh_url, task_id)
        if outcomes[-1] is TaskStatus.QUEUED:
            assert row["worker_id"] is None and row["generation_started_at"] is None
    assert outcomes == [TaskStatus.QUEUED, TaskStatus.QUEUED, TaskStatus.FAILED]
    row = task(reigh_url, task_id)
    assert row["status"] == "Failed" and row["error_message"] == "hub 503" and row["attempts"] == 2


def test_failing_a_child_cascades_to_its_orchestrator_through_update_task_status(edge, reigh_url):
    user = add_reigh_user(reigh_url)
    parent = insert_reigh_task(reigh_url, user.project_id, "travel_orchestrator", {"orchestrator_details": {}})
    store = store_for(edge)
    claimed = store.claim_next_task("w1", lease_seconds=10)
    first, second = store.add_child_tasks(claimed.id, [
        NewTask("travel_segment", {"segment_index": 0}, child_key="s0"),
        NewTask("travel_segment", {"segment_index": 1}, child_key="s1", dependant_on=child_task_id(claimed.id, "s0"))])
    assert store.park_awaiting_children(claimed.id, "w1")
    child = store.claim_next_task("w1", lease_seconds=10)
    assert child.id == first and child.params() == {"segment_index": 0, "orchestrator_task_id_ref": str(parent)}
    assert store.fail_task(child.id, "w1", error_message="out of memory")
    assert task(reigh_url, parent)["status"] == "Failed" and task(reigh_url, second)["status"] == "Failed"
    assert task(reigh_url, first)["error_message"] == "out of memory"
    assert task(reigh_url, second)["error_message"] == f"Cascaded failed from related task {first}"


def test_a_task_without_a_file_completes_through_update_task_status(edge, reigh_url):
    user = add_reigh_user(reigh_url)
    task_id = insert_reigh_task(reigh_url, user.project_id, "wan_2_2_t2i", image_row("no file"))
    store = store_for(edge, user.token)
    claimed = store.claim_next_task("w1", lease_seconds=10)
    assert store.complete_task(claimed.id, "w1", output_location=None, result={})
    row = task(reigh_url, task_id)
    assert row["status"] == "Complete" and row["generation_processed_at"] is not None
    assert ("update-task-status", {"task_id": claimed.id, "status": "Complete"}) in edge.calls


def test_another_users_row_is_a_refusal_not_an_outage(edge, reigh_url):
    me, other = add_reigh_user(reigh_url), add_reigh_user(reigh_url)
    theirs = insert_reigh_task(reigh_url, other.project_id, "wan_2_2_t2i", image_row("theirs"))
    with pytest.raises(EdgeRefused) as refused:
        store_for(edge, me.token).task_status(str(theirs))
    assert not is_store_outage(refused.value)
