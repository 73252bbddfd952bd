"""URL credentials never reach a log line or a row (issue #21, point 9). The probe: ``input_downloaded``
logged ``http://user:pass@host/x.mp4?token=…`` in full, and download errors stored it in error_message."""

from __future__ import annotations

import functools
from http.server import SimpleHTTPRequestHandler

import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.logging_utils import redact_url
from source.media.write import write_video
from tests.helpers import http_server, run_worker

PASSWORD = "pa55-w0rd-canary"
TOKEN = "tok-9f8e7d6c-canary"


@pytest.mark.parametrize(("url", "shown"), [
    (f"http://user:{PASSWORD}@host/x.mp4?token={TOKEN}", "http://[REDACTED]@host/x.mp4?[REDACTED]"),
    (f"https://host/a/b.png?X-Amz-Signature={TOKEN}#frag", "https://host/a/b.png?[REDACTED]#[REDACTED]"),
    (f"GET 'http://h:1/x?sig={TOKEN}' failed", "GET 'http://h:1/x?[REDACTED]' failed"),
    ("http://host/plain.mp4", "http://host/plain.mp4"),
])
def test_userinfo_query_and_fragment_of_urls_are_redacted(url, shown):
    assert redact_url(url) == shown


def test_input_urls_with_credentials_are_redacted_in_logs_and_rows(sqlite_store, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    write_video(np.ones((3, 16, 16, 3)) * 0.5, served / "x.mp4", 8)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    with http_server(handler) as url:
        hostport = url.removeprefix("http://")
        ok = sqlite_store.add_task(NewTask("extract_frame", {
            "input_video_path": f"http://user:{PASSWORD}@{hostport}/x.mp4?token={TOKEN}"}))
        missing = sqlite_store.add_task(NewTask("extract_frame", {
            "input_video_path": f"http://user:{PASSWORD}@{hostport}/gone.mp4?token={TOKEN}"}))
        result = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--allow-private-urls")
    assert result.returncode == 0, result.stderr[-2000:]
    done, failed = sqlite_store.get_task(ok), sqlite_store.get_task(missing)
    assert done.status is TaskStatus.COMPLETE, done.error_message
    assert failed.status is TaskStatus.FAILED
    assert failed.error_message == (f"params.input_video_path: GET http://[REDACTED]@{hostport}/gone.mp4?[REDACTED] "
                                    "returned HTTP 404")
    assert f"http://[REDACTED]@{hostport}/x.mp4?[REDACTED]" in result.stderr  # input_downloaded, redacted
    for text in (result.stdout + result.stderr, failed.error_message, done.result_json or "", failed.result_json or ""):
        assert PASSWORD not in text and TOKEN not in text
