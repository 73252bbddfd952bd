"""URL inputs: only http(s); size and time capped; redirects followed only to http(s) and only so far.
A real HTTP server on 127.0.0.1 plays the hostile host."""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from source.db.models import NewTask, TaskStatus
from source.errors import InputUnavailable, InvalidParams
from source.task_files.fetch import MAX_REDIRECTS, download, resolve_input
from source.task_files.policy import InputPolicy, TaskInputs
from source.worker.loop import Worker
from source.worker.settings import WorkerSettings
from tests.helpers import http_server

BODY = b"x" * 1000


class HostileHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        path = self.path
        if path == "/ok.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif path == "/hop":
            self._redirect("/ok.bin")
        elif path == "/to-file":
            self._redirect("file:///etc/passwd")
        elif path == "/to-ftp":
            self._redirect("ftp://127.0.0.1/secret")
        elif path == "/hop-then-file":
            self._redirect("/to-file")
        elif path.startswith("/loop"):
            self._redirect(f"/loop{len(path)}")
        elif path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
        elif path == "/undeclared-huge":  # no Content-Length: the cap must hold while streaming
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"y" * 4096)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/slow":
            time.sleep(3)
            self.send_response(200)
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()


def local(work_dir, **policy) -> TaskInputs:
    """The hostile host lives on 127.0.0.1: these tests allow private addresses to reach it."""
    return TaskInputs(work_dir, InputPolicy(roots=(work_dir,), allow_private_urls=True, **policy))


@pytest.fixture
def hostile_server() -> Iterator[str]:
    with http_server(HostileHandler) as url:
        yield url


def test_http_downloads_and_http_redirects_work(hostile_server, tmp_path):
    assert download(f"{hostile_server}/ok.bin", "video_guide", local(tmp_path)).read_bytes() == BODY
    assert download(f"{hostile_server}/hop", "video_guide", local(tmp_path / "b")).read_bytes() == BODY


@pytest.mark.parametrize("route", ["/to-file", "/to-ftp", "/hop-then-file"])
def test_redirects_to_other_schemes_are_refused(hostile_server, tmp_path, route):
    with pytest.raises(InvalidParams, match="redirects to a non-http\\(s\\) URL"):
        download(f"{hostile_server}{route}", "video_guide", local(tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing fetched, no partial file left


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x.mp4", "gopher://h/1",
                                 "FILE:///etc/shadow"])
def test_non_http_schemes_are_refused_before_any_io(tmp_path, url):
    with pytest.raises(InvalidParams, match="is not allowed \\(only http and https\\)"):
        resolve_input(url, "image_start", local(tmp_path))


def test_redirect_loops_stop_after_the_limit(hostile_server, tmp_path):
    with pytest.raises(InputUnavailable, match=f"redirected more than {MAX_REDIRECTS} times"):
        download(f"{hostile_server}/loop", "video_guide", local(tmp_path))


@pytest.mark.parametrize(("route", "message"), [("/declared-huge", "the limit is 65536"),
                                                 ("/undeclared-huge", "larger than the 65536-byte limit")])
def test_downloads_are_size_capped(hostile_server, tmp_path, route, message):
    with pytest.raises(InputUnavailable, match=message):
        download(f"{hostile_server}{route}", "video_guide", local(tmp_path), max_bytes=65536)
    assert list(tmp_path.iterdir()) == []  # the partial file is removed


def test_downloads_are_time_capped(hostile_server, tmp_path):
    started = time.monotonic()
    with pytest.raises(InputUnavailable, match="could not download"):
        download(f"{hostile_server}/slow", "video_guide", local(tmp_path), timeout=0.5)
    assert time.monotonic() - started < 2.5


def test_a_row_whose_url_redirects_to_a_file_fails_with_the_reason(sqlite_store, hostile_server, tmp_path):
    task_id = sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": f"{hostile_server}/to-file",
                                                              "frame_index": 0}))
    Worker(sqlite_store, WorkerSettings(worker_id="u", main_output_dir=tmp_path / "out", allow_private_urls=True), exit_when_idle=True).run()
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED
    assert row.error_message.startswith(
        f"params.input_video_path: {hostile_server}/to-file redirects to a non-http(s) URL 'file://")
