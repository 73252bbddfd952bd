"""A row's progress phase belongs to one attempt: a row put back (shutdown requeue, expired lease, retry
later) and claimed again shows no phase until its new attempt reports one; an ended row keeps its last."""

from __future__ import annotations

import time

from source.db.models import NewTask, TaskStatus


def _running_with_phase(store, task_id: str, worker_id: str, phase: str, lease: float = 30) -> None:
    assert store.claim_next_task(worker_id, lease_seconds=lease).id == task_id
    assert store.heartbeat(task_id, worker_id, lease_seconds=lease, progress=0.4, phase=phase)
    assert store.get_task(task_id).progress_phase == phase


def test_a_row_put_back_and_claimed_again_shows_no_phase_from_its_previous_attempt(store):
    task_id = store.add_task(NewTask("ping", {}, max_attempts=10))

    _running_with_phase(store, task_id, "w1", "downloading")
    assert store.requeue_task(task_id, "w1")  # the worker shut down
    assert store.get_task(task_id).progress_phase is None
    assert store.claim_next_task("w2", lease_seconds=30).id == task_id
    assert store.get_task(task_id).progress_phase is None  # claimed, nothing reported yet

    assert store.heartbeat(task_id, "w2", lease_seconds=0.3, progress=0.5, phase="denoising")
    time.sleep(0.5)
    assert [r.task_id for r in store.reclaim_expired_leases()] == [task_id]  # the worker died
    assert store.get_task(task_id).progress_phase is None

    _running_with_phase(store, task_id, "w3", "uploading")
    assert store.retry_later(task_id, "w3", error_message="storage 503", delay_seconds=0) is TaskStatus.QUEUED
    assert store.get_task(task_id).progress_phase is None


def test_an_ended_row_keeps_the_phase_it_ended_in(store):
    task_id = store.add_task(NewTask("ping", {}))
    _running_with_phase(store, task_id, "w1", "decoding")
    assert store.fail_task(task_id, "w1", error_message="out of memory while decoding")
    assert store.get_task(task_id).progress_phase == "decoding"
