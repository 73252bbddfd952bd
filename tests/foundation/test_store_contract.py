"""The task store's contract, run over every backend registered in tests/conftest.py."""

from __future__ import annotations

import threading
import time

from source.db.models import NewTask, TaskStatus


def claim(store, worker="w1", **kwargs):
    kwargs.setdefault("lease_seconds", 30)
    return store.claim_next_task(worker, **kwargs)


def test_claim_takes_highest_priority_then_oldest(store):
    low = store.add_task(NewTask("ping", {}, priority=0))
    high_old = store.add_task(NewTask("ping", {}, priority=5))
    high_new = store.add_task(NewTask("ping", {}, priority=5))
    assert [claim(store).id for _ in range(3)] == [high_old, high_new, low]
    assert claim(store) is None


def test_claim_marks_row_in_progress_with_lease_and_attempt(store):
    task_id = store.add_task(NewTask("ping", {"a": 1}))
    task = claim(store, "worker-a")
    assert task.id == task_id
    assert task.status is TaskStatus.IN_PROGRESS
    assert task.worker_id == "worker-a"
    assert task.attempts == 1
    assert task.lease_expires_at and task.generation_started_at
    assert task.params() == {"a": 1}


def test_dependant_is_claimable_only_after_its_dependency_completes(store):
    head = store.add_task(NewTask("ping", {}))
    child = store.add_task(NewTask("ping", {}, dependant_on=head, priority=10))
    first = claim(store)
    assert first.id == head
    assert claim(store) is None
    assert store.complete_task(head, "w1", output_location="/x", result={"ok": True})
    assert claim(store).id == child


def test_failed_dependency_fails_the_whole_chain_naming_each_link(store):
    head = store.add_task(NewTask("ping", {}))
    middle = store.add_task(NewTask("ping", {}, dependant_on=head))
    tail = store.add_task(NewTask("ping", {}, dependant_on=middle))
    claim(store)
    store.fail_task(head, "w1", error_message="boom")
    failed = store.fail_orphaned_dependants()
    assert {f.task_id for f in failed} == {middle, tail}
    middle_row, tail_row = store.get_task(middle), store.get_task(tail)
    assert middle_row.status is TaskStatus.FAILED and tail_row.status is TaskStatus.FAILED
    assert middle_row.error_message.startswith(f"dependency {head} ended Failed: boom")
    assert tail_row.error_message.startswith(f"dependency {middle} ended Failed")


def test_a_failed_row_carries_its_error_in_output_location_only_when_asked(store):
    """--legacy-output-location: frontends written for the older worker read the error text there."""
    plain, legacy = store.add_task(NewTask("ping", {})), store.add_task(NewTask("ping", {}))
    claim(store), claim(store)
    assert store.fail_task(plain, "w1", error_message="boom")
    assert store.fail_task(legacy, "w1", error_message="bang", output_location="bang")
    assert (store.get_task(plain).output_location, store.get_task(legacy).output_location) == (None, "bang")
    assert store.get_task(legacy).error_message == "bang"


def test_cancelled_dependency_fails_its_dependant(store):
    head = store.add_task(NewTask("ping", {}))
    child = store.add_task(NewTask("ping", {}, dependant_on=head))
    assert store.cancel_task(head)
    store.fail_orphaned_dependants()
    assert store.get_task(child).error_message.startswith(f"dependency {head} ended Cancelled")


def test_expired_lease_returns_row_to_queue_then_fails_after_max_attempts(store):
    task_id = store.add_task(NewTask("ping", {}, max_attempts=2))
    claim(store, "dead-1", lease_seconds=0.1)
    time.sleep(0.25)
    reclaimed = store.reclaim_expired_leases()
    assert [(r.task_id, r.new_status) for r in reclaimed] == [(task_id, TaskStatus.QUEUED)]
    again = claim(store, "dead-2", lease_seconds=0.1)
    assert again.attempts == 2
    time.sleep(0.25)
    reclaimed = store.reclaim_expired_leases()
    assert reclaimed[0].new_status is TaskStatus.FAILED
    row = store.get_task(task_id)
    assert row.status is TaskStatus.FAILED
    assert row.error_message == "lease expired after 2 attempts (last worker: dead-2)"


def test_heartbeat_extends_lease_and_refuses_a_worker_that_lost_the_row(store):
    task_id = store.add_task(NewTask("ping", {}))
    claim(store, "w1", lease_seconds=0.3)
    for _ in range(4):
        time.sleep(0.1)
        assert store.heartbeat(task_id, "w1", lease_seconds=0.3, progress=0.5)
    assert store.reclaim_expired_leases() == []
    assert store.get_task(task_id).progress == 0.5
    assert not store.heartbeat(task_id, "someone-else", lease_seconds=10)


def test_zombie_completion_after_reclaim_is_refused(store):
    task_id = store.add_task(NewTask("ping", {}))
    claim(store, "zombie", lease_seconds=0.1)
    time.sleep(0.25)
    store.reclaim_expired_leases()
    claim(store, "rescuer")
    assert not store.complete_task(task_id, "zombie", output_location="/stale", result=None)
    assert store.complete_task(task_id, "rescuer", output_location="/fresh", result={"n": 1})
    row = store.get_task(task_id)
    assert (row.status, row.output_location, row.worker_id) == (TaskStatus.COMPLETE, "/fresh", "rescuer")


def test_requeue_does_not_count_the_attempt(store):
    task_id = store.add_task(NewTask("ping", {}))
    claim(store)
    assert store.requeue_task(task_id, "w1")
    row = store.get_task(task_id)
    assert (row.status, row.attempts, row.worker_id) == (TaskStatus.QUEUED, 0, None)


def test_cancelled_row_is_never_claimed_and_running_cancel_is_visible(store):
    queued = store.add_task(NewTask("ping", {}))
    assert store.cancel_task(queued)
    assert claim(store) is None
    running = store.add_task(NewTask("ping", {}))
    claim(store)
    assert store.cancel_task(running)
    assert store.task_status(running) == (TaskStatus.CANCELLED, "w1")
    assert not store.complete_task(running, "w1", output_location="/x", result=None)
    assert store.get_task(running).status is TaskStatus.CANCELLED


def test_retry_requeues_failed_row_with_attempts_reset(store):
    task_id = store.add_task(NewTask("ping", {}))
    claim(store)
    store.fail_task(task_id, "w1", error_message="bad")
    assert store.retry_task(task_id)
    row = store.get_task(task_id)
    assert (row.status, row.attempts, row.error_message) == (TaskStatus.QUEUED, 0, None)
    assert not store.retry_task(task_id)  # only Failed/Cancelled rows


def test_resident_model_rows_go_first_within_priority_inside_the_window(store):
    other = store.add_task(NewTask("t2v", {"model": "other"}))
    mine_by_param = store.add_task(NewTask("t2v", {"model": "tiny_t2v"}))
    mine_by_type = store.add_task(NewTask("flux", {}))
    urgent_other = store.add_task(NewTask("t2v", {"model": "other"}, priority=1))
    order = [
        claim(store, resident_model="tiny_t2v", resident_task_types=("flux",), affinity_window_seconds=3600).id
        for _ in range(4)
    ]
    assert order == [urgent_other, mine_by_param, mine_by_type, other]


def test_affinity_yields_to_rows_older_than_the_window(store):
    other = store.add_task(NewTask("t2v", {"model": "other"}))
    time.sleep(0.05)
    mine = store.add_task(NewTask("t2v", {"model": "tiny_t2v"}))
    first = claim(store, resident_model="tiny_t2v", affinity_window_seconds=0)
    assert first.id == other
    assert claim(store).id == mine


def test_row_with_broken_params_json_never_breaks_the_claim_and_is_failed_by_it(store):
    bad = store.add_task(NewTask("ping", {}))
    good = store.add_task(NewTask("t2v", {"model": "tiny_t2v"}))
    _corrupt_params(store, bad, "{not json")
    task = claim(store, resident_model="tiny_t2v", affinity_window_seconds=3600)
    assert task.id == good
    # the claim itself fails the broken row with the reason, and hands out nothing it cannot run
    assert claim(store) is None
    broken = store.get_task(bad)
    assert broken.status is TaskStatus.FAILED
    assert broken.error_message.startswith("params is not valid JSON")


def test_double_encoded_params_are_read_as_params_text(store):
    task_id = store.add_task(NewTask("ping", {}))
    _corrupt_params(store, task_id, '{"message": "hi"}')
    assert claim(store).params() == {"message": "hi"}


def test_concurrent_claims_from_threads_never_double_claim(store):
    ids = {store.add_task(NewTask("ping", {"i": i})) for i in range(60)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while (task := claim(store, name)) is not None:
            with lock:
                claimed.append(task.id)

    threads = [threading.Thread(target=claimer, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)


def test_wait_for_change_wakes_on_another_connections_insert(store, tmp_path):
    woke: list[float] = []

    def waiter() -> None:
        started = time.monotonic()
        if store.wait_for_change(5.0):
            woke.append(time.monotonic() - started)

    store.wait_for_change(0.01)  # establish the baseline on this thread's connection
    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.2)
    store.add_task(NewTask("ping", {}))
    thread.join()
    assert woke and woke[0] < 1.0
    assert store.has_claimable_task()


def test_stats_count_by_status_and_worker(store):
    a = store.add_task(NewTask("ping", {}))
    store.add_task(NewTask("ping", {}))
    claim(store, "wa")
    store.complete_task(a, "wa", output_location=None, result=None)
    stats = store.stats()
    assert stats.by_status == {"Complete": 1, "Queued": 1}
    assert stats.by_worker == {"wa": {"Complete": 1}}


def _corrupt_params(store, task_id: str, text: str) -> None:
    """Write raw params as a producer with plain SQL might."""
    corrupt = getattr(store, "corrupt_params_for_tests", None)
    if corrupt is not None:
        corrupt(task_id, text)
        return
    conn = store._conn()
    conn.execute("UPDATE tasks SET params = ? WHERE id = ?", (text, task_id))


def test_summaries_list_rows_newest_first_without_params_and_with_the_prompts_start(store):
    """What the status page's overview reads every refresh: never a row's params or result (a row may hold a
    million characters of each), only the prompt's first characters, read by the database."""
    from source.db.models import SUMMARY_PROMPT_CHARS

    big = store.add_task(NewTask("t2v", {"prompt": "p" * 5000, "padding": "x" * 200_000}))
    other = store.add_task(NewTask("ping", {"message": "hi"}))
    rows = store.list_task_summaries(limit=10)
    assert [row.id for row in rows] == [other, big]
    assert rows[1].prompt == "p" * SUMMARY_PROMPT_CHARS and rows[0].prompt is None
    assert not hasattr(rows[1], "params_json") and rows[1].status is TaskStatus.QUEUED
    assert claim(store).id == big
    assert [row.id for row in store.list_task_summaries(status=TaskStatus.QUEUED, limit=5)] == [other]
