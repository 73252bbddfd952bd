"""#21 point 4 and 8: amplification and holds. One orchestrator row cannot fan out into thousands of rows;
``timeout_seconds`` is honoured by every task type; every task runs under a timeout by default (scaled by
its model); a generation over its frames × pixels × steps budget is refused before any model loads; a row
that is interrupted by every shutdown ends Failed instead of cycling forever (both backends)."""

from __future__ import annotations

import threading
import time

import pytest

from source.db.models import NewTask, TaskStatus
from source.engine.model_defs import load_model_def
from source.routing import known_task_types
from source.worker.limits import TIMEOUT_WITHOUT_MODEL_SECONDS, default_timeout, task_timeout
from source.worker.loop import Worker
from source.worker.settings import WorkerSettings
from tests.hardening.raw_rows import assert_good_row_completed, drain
from tests.helpers import in_process_worker, wait_for


def _travel(images: int) -> dict:
    segments = images - 1
    return {"orchestrator_details": {
        "input_image_paths_resolved": [f"/nowhere/{i}.png" for i in range(images)],
        "base_prompts_expanded": ["x"] * segments, "segment_frames_expanded": [9] * segments,
        "frame_overlap_expanded": [2] * (segments - 1), "parsed_resolution_wh": "32x32", "model_name": "tiny_vace",
    }}


def test_travel_of_5001_images_is_refused_before_any_child_row_exists(raw_backend, tmp_path):
    orchestrator = raw_backend.store.add_task(NewTask("travel_orchestrator", _travel(5001)))
    good = raw_backend.store.add_task(NewTask("ping", {}))
    elapsed = drain(raw_backend.store, tmp_path / "out")
    row = raw_backend.store.get_task(orchestrator)
    assert row.status is TaskStatus.FAILED
    assert row.error_message == ("this travel_orchestrator would create 5001 child tasks; one task may create at "
                                 "most 200 (worker option --max-children-per-task)")
    assert raw_backend.store.list_child_tasks(orchestrator) == []
    assert raw_backend.store.stats().by_status == {"Failed": 1, "Complete": 1}
    assert_good_row_completed(raw_backend.store, good)
    assert elapsed < 10


def test_children_cap_is_configurable(sqlite_store, tmp_path):
    orchestrator = sqlite_store.add_task(NewTask("travel_orchestrator", _travel(4)))
    drain(sqlite_store, tmp_path / "out", max_children_per_task=3)
    assert "would create 4 child tasks; one task may create at most 3" in sqlite_store.get_task(orchestrator).error_message


@pytest.mark.parametrize("task_type", known_task_types())
def test_every_task_type_reads_timeout_seconds(sqlite_store, tmp_path, task_type):
    task_id = sqlite_store.add_task(NewTask(task_type, {"timeout_seconds": -1}))
    drain(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED
    assert row.error_message == "params.timeout_seconds must be a positive number, got -1"


def test_timeout_seconds_stops_a_utility_task(raw_backend, tmp_path):
    slow = raw_backend.store.add_task(NewTask("ping", {"sleep_seconds": 30, "timeout_seconds": 0.5}))
    good = raw_backend.store.add_task(NewTask("ping", {}))
    started = time.monotonic()
    drain(raw_backend.store, tmp_path / "out", timeout=30)
    assert time.monotonic() - started < 10
    row = raw_backend.store.get_task(slow)
    assert row.status is TaskStatus.FAILED and row.error_message == "the task timed out after 0.5 s"
    assert_good_row_completed(raw_backend.store, good)


def test_default_timeout_scales_with_the_model_and_the_row_may_only_shorten_it():
    assert default_timeout("t2v", {"model": "tiny_t2v"}) == 300
    size_gb = load_model_def("t2v").weights.size_gb  # the 14B definition's declared weight size
    assert size_gb > 50 and default_timeout("t2v", {"model": "t2v"}) == 300 + 60 * size_gb
    assert default_timeout("t2v", {"model": "t2v_1.3B"}) < default_timeout("t2v", {"model": "t2v"})
    assert default_timeout("ping", {}) == TIMEOUT_WITHOUT_MODEL_SECONDS
    assert default_timeout("t2v", {"model": "no/such"}) == TIMEOUT_WITHOUT_MODEL_SECONDS
    assert task_timeout("ping", {}, None) == TIMEOUT_WITHOUT_MODEL_SECONDS
    assert task_timeout("ping", {"timeout_seconds": 5}, None) == 5
    assert task_timeout("ping", {"timeout_seconds": 10**9}, None) == TIMEOUT_WITHOUT_MODEL_SECONDS
    assert task_timeout("ping", {"timeout_seconds": 10**9}, 60) == 60
    assert task_timeout("ping", {}, 0) is None  # --task-timeout 0: no limit, as documented
    assert task_timeout("ping", {"timeout_seconds": 7}, 0) == 7


@pytest.mark.parametrize("params", [
    {"resolution": "1024x1024", "video_length": 81, "steps": 2},
    {"resolution": "256x256", "video_length": 17, "steps": 500},
])
def test_tiny_generation_over_the_work_budget_is_refused_before_loading(sqlite_store, tmp_path, monkeypatch, params):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task_id = sqlite_store.add_task(NewTask("t2v", {"model": "tiny_t2v", "prompt": "x", **params}))
    started = time.monotonic()
    worker = in_process_worker(sqlite_store, WorkerSettings(worker_id="budget", main_output_dir=tmp_path / "out"),
                               exit_when_idle=True)
    assert worker.run() == 0
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED, row
    assert "pixel-steps; model 'tiny_t2v' allows at most 20,000,000 per task" in row.error_message
    assert time.monotonic() - started < 60


def test_row_interrupted_by_every_shutdown_ends_failed(raw_backend):
    store = raw_backend.store
    task_id = store.add_task(NewTask("ping", {}, max_attempts=2))
    for _ in range(3):  # free: the attempt is given back
        assert store.claim_next_task("w", lease_seconds=60).id == task_id
        assert store.requeue_task(task_id, "w", free_requeues=3)
        assert store.get_task(task_id).attempts == 0
    assert store.claim_next_task("w", lease_seconds=60).id == task_id  # counted from now on
    assert store.requeue_task(task_id, "w", free_requeues=3)
    row = store.get_task(task_id)
    assert (row.status, row.attempts) == (TaskStatus.QUEUED, 1)
    assert store.claim_next_task("w", lease_seconds=60).id == task_id
    assert store.requeue_task(task_id, "w", free_requeues=3)
    row = store.get_task(task_id)
    assert row.status is TaskStatus.FAILED
    assert row.error_message == "interrupted by a worker shutdown 5 times; 2 of 2 attempts used"
    assert store.claim_next_task("w", lease_seconds=60) is None
    assert store.retry_task(task_id) and store.get_task(task_id).status is TaskStatus.QUEUED


def test_worker_shutdown_requeues_are_counted_after_the_free_ones(sqlite_store, tmp_path):
    task_id = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 60}, max_attempts=1))
    for _ in range(2):  # the first shutdown is free, the second counts the only attempt
        worker = Worker(sqlite_store, WorkerSettings(worker_id="sig", main_output_dir=tmp_path / "out",
                                                     shutdown_grace=0, free_shutdown_requeues=1))
        thread = threading.Thread(target=worker.run)
        thread.start()
        wait_for(lambda: sqlite_store.get_task(task_id).status is TaskStatus.IN_PROGRESS, timeout=10)
        worker.request_stop("SIGTERM")
        thread.join(30)
        assert not thread.is_alive()
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED
    assert row.error_message == "interrupted by a worker shutdown 2 times; 1 of 1 attempts used"
