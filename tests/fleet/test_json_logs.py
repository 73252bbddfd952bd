"""Off a terminal every line a worker writes, on stdout and stderr, is one JSON object: library logging,
tqdm bars (as throttled ``progress`` events), prints and Python warnings included."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from http.server import BaseHTTPRequestHandler

import numpy as np
from PIL import Image

from source.db.models import NewTask, TaskStatus
from tests.helpers import REPO_ROOT, WORKER, _worker_env, http_server


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png()


class ImageServer(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, *_args):
        pass


def every_line_as_json(text: str) -> list[dict]:
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {line[:200]!r}") from None
        assert isinstance(events[-1], dict), line
    return events


def test_worker_off_a_terminal_writes_only_json_lines_with_the_task_context(sqlite_store, tmp_path):
    with http_server(ImageServer) as base:
        i2v = sqlite_store.add_task(NewTask("i2v", {"model": "tiny_i2v", "prompt": "a cat", "seed": 1,
                                                    "image_start": f"{base}/start.png"}))
        t2v = sqlite_store.add_task(NewTask("t2v", {"model": "tiny_t2v", "prompt": "a dog", "seed": 1}))
        # --log-format left at auto: a pipe is not a terminal, so JSON it is.
        done = subprocess.run([sys.executable, str(WORKER), "--db-file", str(sqlite_store.path), "--main-output-dir",
                               str(tmp_path / "out"), "--once", "--debug", "--allow-private-urls"],
                              cwd=REPO_ROOT, env=_worker_env(None), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sqlite_store.get_task(i2v).status is TaskStatus.COMPLETE
    assert sqlite_store.get_task(t2v).status is TaskStatus.COMPLETE
    every_line_as_json(done.stdout)
    events = every_line_as_json(done.stderr)
    by_logger = {}
    for event in events:
        by_logger.setdefault(event.get("logger", ""), []).append(event)
    # diffusers' own records (its "Attention backends ..." warning) went through our handler, with the task.
    diffusers = [e for name, found in by_logger.items() if name.startswith("diffusers") for e in found]
    assert diffusers and all(e.get("task_id") in (i2v, t2v) for e in diffusers)
    # the URL download's HTTP client logged (at --debug) inside the task
    http = [e for name, found in by_logger.items() if name.startswith(("httpx", "httpcore")) for e in found]
    assert any(e.get("task_id") == i2v for e in http)
    # diffusers' loading bars became progress events, each bar's last one at 100 %
    bars = [e for e in events if e["event"] == "progress"]
    assert any(e["bar"].startswith("Loading pipeline components") and e["percent"] == 100 for e in bars)


def test_prints_warnings_and_bars_become_json_and_bars_are_throttled(tmp_path):
    script = """
import logging, time, warnings
from tqdm import tqdm
from source.logging_utils import capture_stray_output, configure_logging
configure_logging("json")
capture_stray_output()
print("hello from a library")
warnings.warn("this API is deprecated", DeprecationWarning, stacklevel=1)
logging.getLogger("psycopg").warning("connection lost")
for _ in tqdm(range(200), desc="Fetching files", mininterval=0):
    time.sleep(0.001)
"""
    done = subprocess.run([sys.executable, "-W", "always", "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    events = every_line_as_json(done.stderr)
    assert any(e["event"] == "stray_output" and e["text"] == "hello from a library" for e in events)
    assert any(e.get("logger") == "py.warnings" and "this API is deprecated" in e["event"] for e in events)
    assert any(e.get("logger") == "psycopg" and e["event"] == "connection lost" for e in events)
    bars = [e for e in events if e["event"] == "progress"]
    # 200 redraws in well under the 5 s interval: the first and the last only
    assert [b["percent"] for b in bars] == [0, 100] and bars[-1]["done"] == "200"
