"""Transient failures are retried later with backoff (run_after), up to max_attempts; the rest fail at once."""

from __future__ import annotations

import random
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from source.db.models import NewTask, TaskStatus
from source.retry import Backoff, RetryPolicy, retry_call
from tests.fleet.test_retention import _video_bytes
from tests.helpers import http_server, log_events, start_worker, wait_for


def test_backoff_doubles_up_to_its_cap_with_jitter_below_the_base():
    backoff = Backoff(first=2.0, cap=10.0, jitter=0.5)
    rng = random.Random(1)
    delays = [backoff.delay(attempt, rng) for attempt in (1, 2, 3, 4, 5)]
    for delay, base in zip(delays, (2, 4, 8, 10, 10), strict=True):
        assert base * 0.5 <= delay <= base
    assert len({round(backoff.delay(3), 6) for _ in range(20)}) > 1  # jittered: workers do not come back together


def test_retry_call_retries_then_raises_the_last_failure():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return "ok"

    policy = RetryPolicy(Backoff(first=1.0, jitter=0.0), attempts=3)
    assert retry_call(flaky, policy, event="flaky_failed", sleep=waits.append) == "ok"
    assert waits == [1.0, 2.0]

    def always_down():
        calls.append(1)
        raise ConnectionError(f"try {len(calls)}")

    calls.clear()
    with pytest.raises(ConnectionError, match="try 2"):
        retry_call(always_down, RetryPolicy(Backoff(jitter=0.0), attempts=2), event="down", sleep=waits.append)


def test_a_retried_row_is_not_claimable_before_run_after_then_fails_once_attempts_are_used(store):
    task_id = store.add_task(NewTask("ping", {}, max_attempts=2))
    assert store.claim_next_task("w1", lease_seconds=30).id == task_id
    assert store.retry_later(task_id, "w1", error_message="hub answered 503", delay_seconds=1.0) is TaskStatus.QUEUED
    row = store.get_task(task_id)
    assert (row.status, row.worker_id, row.error_message) == (TaskStatus.QUEUED, None, "hub answered 503")
    assert store.claim_next_task("w2", lease_seconds=30) is None and not store.has_claimable_task()
    wait_for(store.has_claimable_task, timeout=10, interval=0.1)
    again = store.claim_next_task("w2", lease_seconds=30)
    assert again.id == task_id and again.attempts == 2
    assert store.retry_later(task_id, "w1", error_message="late", delay_seconds=0) is None  # not w1's any more
    assert store.retry_later(task_id, "w2", error_message="hub answered 503", delay_seconds=1) is TaskStatus.FAILED
    row = store.get_task(task_id)
    assert row.status is TaskStatus.FAILED and row.error_message == "gave up after 2 attempts: hub answered 503"


def test_a_row_that_used_up_its_retries_carries_its_error_in_output_location_only_when_asked(store):
    """--legacy-output-location: the older worker's frontends read a failed row's error text there."""
    plain = store.add_task(NewTask("ping", {}, max_attempts=1))
    legacy = store.add_task(NewTask("ping", {}, max_attempts=1))
    store.claim_next_task("w", lease_seconds=30), store.claim_next_task("w", lease_seconds=30)
    assert store.retry_later(plain, "w", error_message="503", delay_seconds=1) is TaskStatus.FAILED
    assert store.retry_later(legacy, "w", error_message="503", delay_seconds=1,
                             error_in_output_location=True) is TaskStatus.FAILED
    assert store.get_task(plain).output_location is None
    assert store.get_task(legacy).output_location == "gave up after 1 attempts: 503"


def test_a_delayed_row_does_not_hold_back_the_rows_behind_it(store):
    first = store.add_task(NewTask("ping", {}, priority=5))
    second = store.add_task(NewTask("ping", {}))
    assert store.claim_next_task("w", lease_seconds=30).id == first
    store.retry_later(first, "w", error_message="storage 502", delay_seconds=60)
    assert store.claim_next_task("w", lease_seconds=30).id == second


class FlakyServer:
    """Serves a video, after answering 503 to the first ``failures`` requests."""

    def __init__(self, data: bytes, failures: int) -> None:
        self.data, self.failures, self.requests = data, failures, 0
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                with server.lock:
                    server.requests += 1
                    failing = server.requests <= server.failures
                if failing:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(server.data)))
                self.end_headers()
                self.wfile.write(server.data)

            def log_message(self, *_args):
                pass

        return Handler


def test_worker_retries_a_503_input_later_until_it_succeeds(sqlite_store, tmp_path):
    flaky = FlakyServer(_video_bytes(tmp_path), failures=2)
    log = tmp_path / "worker.log"
    with http_server(flaky.handler()) as base:
        transient = sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": f"{base}/clip.mp4"}))
        worker = start_worker(sqlite_store.path, tmp_path / "out", "--allow-private-urls", "--poll-interval", "0.2",
                              "--retry-delay", "0.3", "--retry-delay-max", "1", log_path=log)
        try:
            wait_for(lambda: sqlite_store.get_task(transient).status is TaskStatus.COMPLETE, timeout=60)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    row = sqlite_store.get_task(transient)
    assert row.attempts == 3 and flaky.requests == 3
    scheduled = [e for e in log_events(log.read_text()) if e["event"] == "task_retry_scheduled"]
    assert [e["attempt"] for e in scheduled] == [1, 2]
    assert all("returned HTTP 503" in e["error"] for e in scheduled)


def test_a_permanent_input_error_fails_at_once(sqlite_store, tmp_path):
    class Gone(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args):
            pass

    with http_server(Gone) as base:
        task_id = sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": f"{base}/gone.mp4"}))
        worker = start_worker(sqlite_store.path, tmp_path / "out", "--allow-private-urls", "--once",
                              "--retry-delay", "0.3")
        assert worker.wait(timeout=60) == 0
    row = sqlite_store.get_task(task_id)
    assert (row.status, row.attempts) == (TaskStatus.FAILED, 1) and "returned HTTP 404" in row.error_message


@pytest.mark.postgres
def test_an_upload_that_keeps_failing_is_retried_as_a_task_later_and_then_completes(fake_supabase,
                                                                                   supabase_api_store, tmp_path):
    from tests.pg_fixtures import SERVICE_KEY

    fake_supabase.failing_uploads = 3  # the publisher's three quick tries of the first attempt
    task_id = supabase_api_store.add_task(NewTask("ping", {"message": "upload me"}, project_id="p"))
    log = tmp_path / "worker.log"
    worker = start_worker(tmp_path / "unused.db", tmp_path / "out", "--db-type", "supabase", "--supabase-url",
                          fake_supabase.url, "--poll-interval", "0.2", "--retry-delay", "0.3", log_path=log,
                          env={"SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY})
    try:
        wait_for(lambda: supabase_api_store.get_task(task_id).status is TaskStatus.COMPLETE, timeout=60)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    row = supabase_api_store.get_task(task_id)
    assert row.attempts == 2 and row.output_location.startswith(fake_supabase.url)
    scheduled = [e for e in log_events(log.read_text()) if e["event"] == "task_retry_scheduled"]
    assert len(scheduled) == 1 and "uploading the output to Supabase Storage failed" in scheduled[0]["error"]


@pytest.mark.parametrize(("status", "transient"), [(503, True), (502, True), (429, True), (404, False), (401, False)])
def test_hub_5xx_and_429_are_worth_retrying_but_not_a_missing_or_refused_repo(status, transient):
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    from source.hub import is_transient_hub_error

    response = httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/api/models/x/y"))
    try:
        raise RuntimeError("download failed") from HfHubHTTPError(f"{status} error", response=response)
    except RuntimeError as exc:
        assert is_transient_hub_error(exc) is transient
    assert is_transient_hub_error(httpx.ConnectError("connection refused"))
