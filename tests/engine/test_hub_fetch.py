"""One hub fetch with failure memory: a pipeline's weights, a LoRA file or a depth model that the hub could
not give is asked for once per process; every later task fails at once with the same clear message."""

from __future__ import annotations

import json
import subprocess
import sys
from http.server import BaseHTTPRequestHandler

from tests.helpers import REPO_ROOT, http_server

SCRIPT = """
import sys
import time
from source.engine.loading.pipeline import weights_path
from source.engine.model_defs import load_model_def
from source.errors import ModelUnavailable
from source.hub import fetch_hub_file

for fetch in (lambda: weights_path(load_model_def("remote_t2v")),
              lambda: fetch_hub_file("nobody/nothing", "lora.safetensors", what="LoRA")):
    for attempt in range(int(sys.argv[1])):
        started = time.monotonic()
        try:
            fetch()
        except ModelUnavailable as exc:
            print("ERROR", attempt, round(time.monotonic() - started, 2), str(exc)[:200], flush=True)
"""


def test_a_failed_hub_fetch_is_remembered_for_pipelines_and_files_alike(tmp_path):
    hits: list[str] = []

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            hits.append(self.path)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    defaults = tmp_path / "defaults"
    defaults.mkdir()
    (defaults / "remote_t2v.json").write_text(json.dumps({
        "architecture": "wan_t2v", "weights": {"repo": "nobody/remote-t2v"}}))
    with http_server(NotFound) as url:
        env = {"HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0",
               "WGP_DEFAULTS_DIR": str(defaults), "PATH": "/usr/bin:/bin"}

        def requests_made(attempts: int) -> tuple[int, str]:
            before = len(hits)
            result = subprocess.run([sys.executable, "-c", SCRIPT, str(attempts)], cwd=REPO_ROOT,
                                    capture_output=True, text=True, timeout=120, env=env)
            return len(hits) - before, result.stdout

        once, _ = requests_made(1)
        twice, out = requests_made(2)
    lines = [line.split(" ", 3) for line in out.splitlines() if line.startswith("ERROR")]
    assert [(kind, attempt) for kind, attempt, _, _ in lines] == [("ERROR", "0"), ("ERROR", "1")] * 2, out
    pipeline_first, pipeline_again, file_first, file_again = lines
    assert "nobody/remote-t2v" in pipeline_first[3] and "the hub could not be reached" in pipeline_first[3]
    assert "nobody/nothing" in file_first[3]
    assert pipeline_again[3] == pipeline_first[3] and file_again[3] == file_first[3]
    # the second attempts asked the hub nothing: two attempts cost exactly the requests of one
    assert once > 0 and twice == once, (once, twice)


LORA_SCRIPT = """
import sys
from pathlib import Path
from source.generation.loras import fetch_lora

try:
    print("OK", fetch_lora(sys.argv[1], Path(sys.argv[2])))
except Exception as exc:
    print("ERROR", type(exc).__name__, str(exc)[:400])
"""


def test_a_hub_lora_larger_than_the_limit_is_refused_before_any_of_it_is_downloaded(tmp_path):
    """A row may name any hub file as its LoRA (a model's 20 GB weights): the hub's answer about its size
    decides, before the download; a file within the limit is still downloaded."""
    downloads: list[str] = []

    class Hub(BaseHTTPRequestHandler):
        def _headers(self) -> int:
            size = 5 * 2**30 if "huge" in self.path else 64
            self.send_response(200)
            self.send_header("X-Repo-Commit", "0" * 40)
            self.send_header("ETag", '"abc123"')
            self.send_header("Content-Length", str(size))
            self.end_headers()
            return size

        def do_HEAD(self):  # noqa: N802 (http.server's naming)
            self._headers()

        def do_GET(self):  # noqa: N802
            if "/resolve/" in self.path:  # the file itself (huggingface_hub asks the API for other things)
                downloads.append(self.path)
            self.wfile.write(b"x" * min(self._headers(), 1024))  # never gigabytes, even if asked

        def log_message(self, *args):
            pass

    with http_server(Hub) as url:
        env = {"HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "PATH": "/usr/bin:/bin"}

        def fetch(name: str) -> str:
            source = f"https://huggingface.co/someone/loras/resolve/main/{name}.safetensors"
            result = subprocess.run([sys.executable, "-c", LORA_SCRIPT, source, str(tmp_path / "loras" / "wan")],
                                    cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)
            return result.stdout + result.stderr[-2000:]

        huge = fetch("huge")
        assert "HubFileTooLarge" in huge and f"is {5 * 2**30} bytes; the limit is {4 * 2**30} bytes" in huge, huge
        assert downloads == []
        small = fetch("small")
    assert downloads and "small.safetensors" in downloads[0], small  # fetched (the bytes are no LoRA: refused)
