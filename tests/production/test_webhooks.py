"""Webhooks through a real worker process: signed as Standard Webhooks specifies (checked by a receiver with
its own verification code), each event once per attempt, retried when the receiver fails, filtered, throttled,
never holding up the generation, and each delivery's outcome in the row's result."""

from __future__ import annotations

import threading

import pytest

from source.db import NewTask, TaskStatus
from source.worker.webhooks import WebhookSigner
from tests.helpers import run_worker, start_worker, wait_for
from tests.production.receiver import SECRET, webhook_receiver

pytestmark = pytest.mark.slow  # each test starts a worker process

SIGNING = {"WORKER_WEBHOOK_SECRET": SECRET}
PRIVATE = ("--allow-private-urls",)  # the receiver listens on 127.0.0.1


def _run(sqlite_store, tmp_path, *extra, env=SIGNING):
    done = run_worker(sqlite_store.path, tmp_path / "out", "--once", *extra, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_standard_webhooks_test_vector_signs_as_the_spec_says():
    # The example of the Standard Webhooks specification's reference libraries.
    signer = WebhookSigner("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert (signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
            == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")


def test_a_task_posts_start_progress_and_completed_once_each_signed_and_records_them(sqlite_store, tmp_path):
    with webhook_receiver() as receiver:
        task_id = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 1.0, "webhook_url": receiver.url},
                                                project_id="studio"))
        _run(sqlite_store, tmp_path, *PRIVATE, "--webhook-progress-seconds", "0.2")
    deliveries = receiver.deliveries
    types = [d.type for d in deliveries]
    assert types[0] == "task.start" and types[-1] == "task.completed"
    assert types.count("task.start") == types.count("task.completed") == 1
    progress = [d.body["data"]["progress"] for d in deliveries if d.type == "task.progress"]
    assert 1 <= len(progress) <= 8 and progress == sorted(progress)  # throttled to one per 0.2 s of a 1 s task
    assert all(d.signature_ok for d in deliveries)
    assert len({d.headers["webhook-id"] for d in deliveries}) == len(deliveries)
    assert all(abs(int(d.headers["webhook-timestamp"]) - d.at) < 30 for d in deliveries)
    row = sqlite_store.get_task(task_id)
    completed = deliveries[-1].body["data"]
    assert completed["task_id"] == task_id and completed["status"] == "Complete" and completed["attempt"] == 1
    assert completed["output_location"] == row.output_location and completed["project_id"] == "studio"
    assert "webhook_url" not in row.result.get("ignored_params", [])  # the worker read it, no handler
    recorded = {w["event"]: w for w in row.result["webhooks"]}
    assert recorded["start"]["delivered"] and recorded["start"]["attempts"] == 1
    assert recorded["completed"]["webhook_id"] == deliveries[-1].headers["webhook-id"]
    assert recorded["completed"]["status_code"] == 200
    # progress is counted, not listed (one a few seconds through a long generation)
    assert recorded["progress"] == {"event": "progress", "delivered_count": len(progress), "failed_count": 0}


def test_a_delivery_the_receiver_fails_is_retried_under_the_same_id(sqlite_store, tmp_path):
    failed_once = threading.Event()

    def answer(delivery):
        if delivery.type == "task.completed" and not failed_once.is_set():
            failed_once.set()
            return 503
        return 200

    with webhook_receiver() as receiver:
        receiver.answer = answer
        task_id = sqlite_store.add_task(NewTask("ping", {"webhook_url": receiver.url,
                                                         "webhook_events": "start,completed"}))
        _run(sqlite_store, tmp_path, *PRIVATE)
    completed = [d for d in receiver.deliveries if d.type == "task.completed"]
    assert len(completed) == 2 and completed[0].headers["webhook-id"] == completed[1].headers["webhook-id"]
    assert all(d.signature_ok for d in completed)
    assert receiver.types() == ["task.start", "task.completed", "task.completed"]
    recorded = {w["event"]: w for w in sqlite_store.get_task(task_id).result["webhooks"]}
    assert recorded["completed"]["delivered"] and recorded["completed"]["attempts"] == 2
    assert set(recorded) == {"start", "completed"}


def test_a_receiver_that_never_answers_well_is_given_up_after_the_retry_window(sqlite_store, tmp_path):
    with webhook_receiver() as receiver:
        receiver.answer = lambda _d: 500
        task_id = sqlite_store.add_task(NewTask("ping", {"webhook_url": receiver.url,
                                                         "webhook_events": ["completed"]}))
        _run(sqlite_store, tmp_path, *PRIVATE, "--webhook-retry-seconds", "1.5")
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.COMPLETE
    [recorded] = row.result["webhooks"]
    assert recorded["delivered"] is False and recorded["status_code"] == 500 and recorded["attempts"] >= 2
    assert recorded["error"] == "HTTP 500"
    assert len(receiver.deliveries) == recorded["attempts"]


def test_the_events_filter_sends_only_the_failure_of_a_failing_task(sqlite_store, tmp_path):
    with webhook_receiver() as receiver:
        task_id = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": "long", "webhook_url": receiver.url,
                                                         "webhook_events": ["failed"]}, max_attempts=1))
        _run(sqlite_store, tmp_path, *PRIVATE)
    [failed] = receiver.deliveries
    row = sqlite_store.get_task(task_id)
    assert failed.type == "task.failed" and failed.body["data"]["error_message"] == row.error_message
    assert "sleep_seconds" in row.error_message and failed.signature_ok


def test_a_slow_receiver_never_holds_up_the_task(sqlite_store, tmp_path):
    release = threading.Event()
    with webhook_receiver() as receiver:
        receiver.answer = lambda _d: (release.wait(30), 200)[1]
        task_id = sqlite_store.add_task(NewTask("ping", {"webhook_url": receiver.url}))
        proc = start_worker(sqlite_store.path, tmp_path / "out", "--once", *PRIVATE, env=SIGNING)
        try:
            wait_for(lambda: receiver.types() == ["task.start"], timeout=60)  # held, unanswered
            # the task completes while the start delivery still waits for its answer
            wait_for(lambda: sqlite_store.get_task(task_id).status is TaskStatus.COMPLETE, timeout=30)
            assert receiver.types() == ["task.start"]
            release.set()
            assert proc.wait(timeout=60) == 0  # a worker stopping delivers what it owes first
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
    assert receiver.types() == ["task.start", "task.completed"]
    recorded = sqlite_store.get_task(task_id).result["webhooks"]
    assert [(w["event"], w["delivered"]) for w in recorded[:2]] == [("start", True), ("completed", True)]


def test_a_cancelled_task_posts_cancelled(sqlite_store, tmp_path):
    with webhook_receiver() as receiver:
        task_id = sqlite_store.add_task(NewTask("ping", {"sleep_seconds": 60, "webhook_url": receiver.url,
                                                         "webhook_events": ["start", "cancelled"]}))
        proc = start_worker(sqlite_store.path, tmp_path / "out", "--once", *PRIVATE, env=SIGNING)
        try:
            wait_for(lambda: receiver.types() == ["task.start"], timeout=60)
            assert sqlite_store.cancel_task(task_id)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert receiver.types() == ["task.start", "task.cancelled"]
    assert receiver.deliveries[-1].body["data"]["status"] == "Cancelled"
    assert sqlite_store.get_task(task_id).result["webhooks"][-1]["event"] == "cancelled"


def test_the_worker_default_url_serves_rows_without_their_own(sqlite_store, tmp_path):
    with webhook_receiver() as receiver:
        sqlite_store.add_task(NewTask("ping", {"webhook_events": ["completed"]}))
        _run(sqlite_store, tmp_path, "--webhook-url", receiver.url)
    assert receiver.types() == ["task.completed"]


def test_a_row_webhook_to_a_private_address_fails_the_row_like_a_private_input(sqlite_store, tmp_path):
    with webhook_receiver() as receiver:
        task_id = sqlite_store.add_task(NewTask("ping", {"webhook_url": receiver.url}))
        _run(sqlite_store, tmp_path)  # no --allow-private-urls
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED and receiver.deliveries == []
    assert "params.webhook_url" in row.error_message and "non-public address 127.0.0.1" in row.error_message


def test_a_row_webhook_on_a_worker_without_a_secret_fails_naming_it(sqlite_store, tmp_path):
    with webhook_receiver() as receiver:
        task_id = sqlite_store.add_task(NewTask("ping", {"webhook_url": receiver.url}))
        _run(sqlite_store, tmp_path, *PRIVATE, env={})
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED and "WORKER_WEBHOOK_SECRET" in row.error_message
    assert receiver.deliveries == []


@pytest.mark.parametrize(("params", "field"), [
    ({"webhook_url": "ftp://example.com/x"}, "params.webhook_url"),
    ({"webhook_url": "https://example.com/x", "webhook_events": ["done"]}, "params.webhook_events"),
])
def test_a_bad_webhook_is_refused_at_submission(params, field):
    from source.submission import SubmissionRefused, check_submission

    with pytest.raises(SubmissionRefused) as refused:
        check_submission("ping", params)
    assert refused.value.field == field


def test_a_worker_with_a_default_url_and_no_secret_does_not_start(sqlite_store, tmp_path):
    done = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--webhook-url", "https://example.com/h")
    assert done.returncode == 2 and "WORKER_WEBHOOK_SECRET" in done.stderr


@pytest.mark.postgres
def test_delivery_outcomes_join_a_finished_rows_result_only_for_the_worker_that_ran_it(store):
    task_id = store.add_task(NewTask("ping", {}))
    claimed = store.claim_next_task("w1", lease_seconds=30)
    assert claimed.id == task_id
    deliveries = [{"event": "completed", "delivered": True, "attempts": 1}]
    assert not store.record_webhook_deliveries(task_id, "w1", deliveries)  # still In Progress
    assert store.complete_task(task_id, "w1", output_location="/x", result={"seed": 7})
    assert not store.record_webhook_deliveries(task_id, "w2", deliveries)
    assert store.record_webhook_deliveries(task_id, "w1", deliveries)
    assert store.get_task(task_id).result == {"seed": 7, "webhooks": deliveries}


def test_each_attempt_of_a_row_posts_its_own_start_and_only_the_last_one_ends(sqlite_store, tmp_path):
    """An S3 endpoint that is down: the first attempt is requeued (no ending posted), the second fails the row."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with webhook_receiver() as receiver:
        task_id = sqlite_store.add_task(NewTask("ping", {"webhook_url": receiver.url,
                                                         "webhook_events": ["start", "failed", "completed"]},
                                                max_attempts=2))
        _run(sqlite_store, tmp_path, *PRIVATE, "--retry-delay", "0", "--storage", "s3://outputs/x",
             env={**SIGNING, "S3_ENDPOINT_URL": down, "S3_ACCESS_KEY_ID": "k", "S3_SECRET_ACCESS_KEY": "secret-key"})
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED and "the generated file is kept at" in row.error_message
    assert [(d.type, d.body["data"]["attempt"]) for d in receiver.deliveries] == [
        ("task.start", 1), ("task.start", 2), ("task.failed", 2)]
    assert receiver.deliveries[-1].body["data"]["error_message"] == row.error_message
    assert [w["event"] for w in row.result["webhooks"]] == ["start", "failed"]


@pytest.mark.postgres
def test_on_postgres_a_worker_process_records_its_deliveries_in_the_row(postgres_store, postgres_schema_url, tmp_path):
    with webhook_receiver() as receiver:
        task_id = postgres_store.add_task(NewTask("ping", {"webhook_url": receiver.url,
                                                           "webhook_events": ["start", "completed"]}))
        done = run_worker(postgres_schema_url, tmp_path / "out", "--once", *PRIVATE, env=SIGNING)
        assert done.returncode == 0, done.stderr[-3000:]
    assert receiver.types() == ["task.start", "task.completed"] and all(d.signature_ok for d in receiver.deliveries)
    recorded = postgres_store.get_task(task_id).result["webhooks"]
    assert [(w["event"], w["delivered"]) for w in recorded] == [("start", True), ("completed", True)]
