"""Outputs appear whole or not at all (docs/security.md): a write that fills the disk leaves no partial file
behind (before, the partial mp4 kept the disk full and every later task failed too), and `tasks purge`
removes what a worker killed mid-write left under its temporary name."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from source.db.models import NewTask, TaskStatus
from source.media.atomic_files import PARTIAL_MARK
from tests.hardening.test_storage_faults import IS_ROOT, fill, tmpfs
from tests.helpers import REPO_ROOT, ping_executions, start_worker, wait_for


@pytest.mark.skipif(not IS_ROOT, reason="mounting a tiny tmpfs needs root")
def test_an_output_that_fills_the_disk_leaves_nothing_and_the_next_task_runs(sqlite_store, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(inputs / "a.png")
    Image.fromarray(255 - noise).save(inputs / "b.png")
    with tmpfs(tmp_path / "out", "size=1m") as out:
        filler = fill(out)
        filler.write_bytes(b"\0" * (filler.stat().st_size - 600_000))  # 600 kB free: less than the video
        free_before = os.statvfs(out).f_bavail
        worker = start_worker(sqlite_store.path, out, "--worker", "w", "--poll-interval", "0.2", "--input-roots",
                              str(inputs))
        try:
            video = sqlite_store.add_task(NewTask("rife_interpolate_images", {
                "input_image_path1": str(inputs / "a.png"), "input_image_path2": str(inputs / "b.png"),
                "frames": 40, "resolution": "256x256", "method": "flow"}))
            wait_for(lambda: sqlite_store.get_task(video).status is TaskStatus.FAILED, timeout=120)
            assert sqlite_store.get_task(video).error_message.startswith("storage error: No space left on device")
            leftovers = [p.name for p in out.rglob("*") if p.is_file() and p != filler]
            assert leftovers == [] and os.statvfs(out).f_bavail == free_before
            after = sqlite_store.add_task(NewTask("ping", {"message": "the disk has room again"}))
            wait_for(lambda: sqlite_store.get_task(after).status.is_final, timeout=60)
            assert sqlite_store.get_task(after).status is TaskStatus.COMPLETE, sqlite_store.get_task(after)
            assert len(ping_executions(out, after)) == 1
        finally:
            worker.terminate()
            worker.wait(timeout=30)


def test_tasks_purge_removes_partial_outputs_no_row_names_and_leaves_writes_in_progress(sqlite_store, tmp_path):
    out = tmp_path / "out"
    (out / "travel_run").mkdir(parents=True)
    killed = out / "travel_run" / f"seg_0_stitched{PARTIAL_MARK}1a2b3c4d.mp4"  # a worker died writing it
    killed.write_bytes(b"\0" * 1000)
    old = time.time() - 3 * 3600
    os.utime(killed, (old, old))
    writing = out / f"t2v_abc{PARTIAL_MARK}5e6f7a8b.mp4"  # being written right now
    writing.write_bytes(b"\0" * 10)
    whole = out / "finished.mp4"
    whole.write_bytes(b"\0" * 10)
    os.utime(whole, (old, old))

    def purge(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "source.cli.tasks", "purge", "--db-file", str(sqlite_store.path),
                               "--older-than", "1h", "--main-output-dir", str(out), *extra],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    dry = purge("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete partial output {killed}" in dry.stdout and killed.exists()
    done = purge()
    assert done.returncode == 0, done.stderr
    assert "deleted 1 partial outputs" in done.stdout
    assert not killed.exists() and writing.exists() and whole.exists()
