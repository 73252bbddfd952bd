"""Weights arrive before the first task (--preload-model, tasks prefetch) and a running row says which phase
its progress belongs to."""

from __future__ import annotations

import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler

from click.testing import CliRunner

import source.cli.tasks as task_cli
import wgp
from source.db.models import NewTask, TaskStatus
from source.handlers.context import CancelSignal, ProgressState
from source.worker.heartbeat import Heartbeat
from tests.helpers import REPO_ROOT, _worker_env, http_server, log_events, run_worker, wait_for


def test_preloaded_model_is_resident_before_the_first_claim(sqlite_store, tmp_path):
    task_id = sqlite_store.add_task(NewTask("t2v", {"model": "tiny_t2v", "prompt": "a cat", "seed": 1}))
    done = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--preload-model", "tiny_t2v", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sqlite_store.get_task(task_id).status is TaskStatus.COMPLETE
    names = [e["event"] for e in log_events(done.stderr)]
    assert names.index("model_loaded") < names.index("model_preloaded") < names.index("task_claimed")
    assert names.count("model_loaded") == 1  # the task found its model resident


def test_unknown_preload_model_is_a_usage_error_naming_the_known_ones(sqlite_store, tmp_path):
    done = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--preload-model", "nope")
    assert done.returncode == 2
    assert "--preload-model" in done.stderr and "unknown model_type 'nope'" in done.stderr and "tiny_t2v" in done.stderr


class GatedHub(BaseHTTPRequestHandler):
    """Answers like huggingface.co for a gated repo the caller has not been granted."""

    def _gated(self):
        self.send_response(403)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to model is restricted")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(b'{"error": "Access to model is restricted"}')

    do_GET = do_HEAD = _gated  # noqa: N815

    def log_message(self, *_args):
        pass


def test_prefetch_of_a_gated_repo_says_how_to_get_access(tmp_path):
    with http_server(GatedHub) as hub:
        env = {**_worker_env(None), "HF_ENDPOINT": hub, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0",
               "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5"}
        env.pop("HF_TOKEN", None)
        done = subprocess.run([sys.executable, "-m", "source.cli.tasks", "prefetch", "t2v_1.3B"], cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "t2v_1.3B:" in done.stderr and "gated" in done.stderr
    assert "https://huggingface.co/Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in done.stderr and "HF_TOKEN" in done.stderr


def test_prefetch_fetches_what_a_definition_needs_and_refuses_unknown_names():
    runner = CliRunner()
    fetched = runner.invoke(task_cli.cli, ["prefetch", "tiny_t2v"])
    assert fetched.exit_code == 0, fetched.output
    assert any(line.startswith("tiny_t2v: /") for line in fetched.output.splitlines())
    unknown = runner.invoke(task_cli.cli, ["prefetch", "tiny_t2v", "nope"])
    assert unknown.exit_code == 1 and "nope: unknown model_type 'nope'" in unknown.output


def test_engine_reports_loading_denoising_decoding_encoding_in_order(tmp_path):
    phases = []
    wgp.generate_video({"gen": {"file_list": []}}, "tiny_t2v", output_dir=tmp_path, prompt="a cat", seed=2,
                       num_inference_steps=3, progress_callback=lambda step, total, phase: phases.append(phase))
    assert [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p] == \
        ["loading", "denoising", "decoding", "encoding"]


def test_heartbeat_writes_the_phase_with_the_progress_and_tasks_list_shows_it(store):
    task_id = store.add_task(NewTask("ping", {}))
    assert store.claim_next_task("w1", lease_seconds=30).id == task_id
    progress = ProgressState()
    beat = Heartbeat(store, task_id, "w1", lease_seconds=30, interval=0.2, cancel=CancelSignal(), progress=progress)
    beat.start()
    try:
        progress.report(0.5, "denoising")
        wait_for(lambda: store.get_task(task_id).progress_phase == "denoising", timeout=10)
        assert store.get_task(task_id).progress == 0.5
        progress.report(1.0, "decoding")
        wait_for(lambda: store.get_task(task_id).progress_phase == "decoding", timeout=10)
        progress.report(1.0, "not a phase")  # free text is not a phase: the last phase stays
        time.sleep(1.5)
        assert store.get_task(task_id).progress_phase == "decoding"
    finally:
        beat.stop()


def test_tasks_list_and_show_print_the_phase_of_a_running_row(sqlite_store):
    task_id = sqlite_store.add_task(NewTask("ping", {}))
    sqlite_store.claim_next_task("w1", lease_seconds=30)
    sqlite_store.heartbeat(task_id, "w1", lease_seconds=30, progress=0.4, phase="denoising")
    runner = CliRunner()
    listed = runner.invoke(task_cli.cli, ["list", "--db-file", str(sqlite_store.path)])
    assert "40% denoising" in listed.output
    shown = runner.invoke(task_cli.cli, ["show", "--db-file", str(sqlite_store.path), task_id])
    assert '"progress_phase": "denoising"' in shown.output
