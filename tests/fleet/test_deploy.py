"""The production set-up the README shows is the one the repo ships: deploy/'s systemd unit verifies and its
flags parse, and its metrics port scheme (base + GPU index) works for any index."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys

import httpx
import pytest

from tests.helpers import REPO_ROOT, start_worker, wait_for

UNIT = REPO_ROOT / "deploy" / "wangp-worker@.service"


def _exec_start_args(gpu: int) -> list[str]:
    lines, collecting = [], False
    for line in UNIT.read_text().splitlines():
        if line.startswith("ExecStart="):
            collecting, line = True, line.removeprefix("ExecStart=")
        if collecting:
            lines.append(line.rstrip("\\").strip())
            collecting = line.endswith("\\")
    args = shlex.split(" ".join(lines).replace("%i", str(gpu)).replace("%H", "box"))
    assert args[1].endswith("worker.py")
    return args[2:]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_shipped_systemd_unit_verifies_for_a_two_digit_gpu_index(tmp_path):
    # Only the install location changes: the interpreter must exist for systemd-analyze to accept the unit.
    text = UNIT.read_text().replace("/opt/wangp-worker/.venv/bin/python", sys.executable)
    instance = tmp_path / "wangp-worker@12.service"
    instance.write_text(text)
    (tmp_path / "wangp-worker@.service").write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(instance)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_shipped_unit_flags_are_worker_flags():
    import worker

    context = worker.main.make_context("worker.py", _exec_start_args(12))
    assert context.params["metrics_port"] + context.params["metrics_port_offset"] == 9212
    assert context.params["worker_id"] == "box-gpu12"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_metrics_port_is_the_base_plus_the_offset(sqlite_store, tmp_path):
    port = _free_port()
    worker = start_worker(sqlite_store.path, tmp_path / "out", "--metrics-port", str(port - 12),
                          "--metrics-port-offset", "12", "--poll-interval", "0.2")
    try:
        wait_for(lambda: _health(port), timeout=60, interval=0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def _health(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
