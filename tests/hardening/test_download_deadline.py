"""Downloads have a total deadline (issue #21, point 4). The probe: a server sending one byte every 2 s
held a worker for minutes, since each read arrived well within the per-read timeout."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler

import pytest

from source.errors import InputUnavailable
from source.task_files.fetch import download
from source.task_files.policy import InputPolicy, TaskInputs


class Trickle(BaseHTTPRequestHandler):
    """Slow on purpose: ``/body`` sends its headers, then a byte every 0.2 s; ``/headers`` trickles the
    header block itself, a byte at a time."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        try:
            if self.path == "/body":
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            else:
                for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"p" * 1000:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def trickle_server():
    from tests.helpers import http_server

    with http_server(Trickle) as url:
        yield url


@pytest.mark.parametrize("route", ["/body", "/headers"])
def test_a_trickling_server_is_cut_off_at_the_total_deadline(trickle_server, tmp_path, route):
    inputs = TaskInputs(tmp_path / "work", InputPolicy(roots=(tmp_path,), allow_private_urls=True,
                                                       download_deadline=1.5))
    started = time.monotonic()
    with pytest.raises(InputUnavailable, match="took longer than the 1.5 s limit"):
        download(f"{trickle_server}{route}", "video_guide", inputs)
    assert time.monotonic() - started < 3.0
    assert list((tmp_path / "work").iterdir()) == []  # no partial file left

