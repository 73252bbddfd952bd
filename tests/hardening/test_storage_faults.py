"""Disk full and unwritable output dir: the task fails with the storage reason stored, the worker goes on.

Real file systems, no hook: a tiny tmpfs filled to the brim (ENOSPC) and a read-only mount (EROFS). Both
need root to mount; without it the read-only case falls back to a directory without write permission.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from source.db.models import NewTask, TaskStatus
from source.errors import describe_storage_error
from tests.helpers import log_events, ping_executions, start_worker, wait_for

IS_ROOT = os.geteuid() == 0


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler.bin"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def run_fault_then_recovery(db, out: Path, log: Path, recover, expected_error: str) -> None:
    """A row meets the fault and fails with ``expected_error``; after ``recover()`` the same worker
    process runs the next row to completion."""
    worker = start_worker(db.path, out, "--worker", "w", "--poll-interval", "0.2", log_path=log)
    try:
        doomed = db.add_task(NewTask("ping", {"message": "meets the fault"}))
        wait_for(lambda: db.get_task(doomed).status is TaskStatus.FAILED, timeout=60)
        row = db.get_task(doomed)
        assert row.error_message.startswith(expected_error), row.error_message
        recover()
        fine = db.add_task(NewTask("ping", {"message": "after recovery"}))
        wait_for(lambda: db.get_task(fine).status is TaskStatus.COMPLETE, timeout=60)
        assert len(ping_executions(out, fine)) == 1
        assert worker.poll() is None
    finally:
        worker.terminate()
        assert worker.wait(timeout=30) == 0
    events = log_events(log.read_text())
    # An operator problem, reported as such: no crash report with a traceback.
    assert not [e for e in events if e.get("event") == "handler_crashed"]
    assert [e for e in events if e.get("event") == "task_failed" and e["error"].startswith(expected_error)]


@pytest.mark.skipif(not IS_ROOT, reason="mounting a tiny tmpfs needs root")
def test_full_disk_fails_the_task_with_enospc_and_the_worker_goes_on(sqlite_store, tmp_path):
    with tmpfs(tmp_path / "out", "size=64k") as out:
        filler = fill(out)
        run_fault_then_recovery(sqlite_store, out, tmp_path / "w.log", filler.unlink,
                                "storage error: No space left on device (ENOSPC)")


def test_read_only_output_dir_fails_the_task_and_the_worker_goes_on(sqlite_store, tmp_path):
    out = tmp_path / "out"
    if IS_ROOT:  # root writes through permission bits: only a read-only mount stops it
        with tmpfs(out, "size=1m,ro"):
            def make_writable() -> None:
                subprocess.run(["mount", "-o", "remount,rw", str(out)], check=True)

            run_fault_then_recovery(sqlite_store, out, tmp_path / "w.log", make_writable,
                                    "storage error: Read-only file system (EROFS)")
    else:
        out.mkdir()
        out.chmod(0o555)
        try:
            run_fault_then_recovery(sqlite_store, out, tmp_path / "w.log", lambda: out.chmod(0o755),
                                    "storage error: Permission denied (EACCES)")
        finally:
            out.chmod(0o755)


def test_storage_errors_are_found_behind_wrapping_exceptions(tmp_path):
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "video.mp4"))
        except OSError as exc:
            raise RuntimeError("encoder pipe closed") from exc
    except RuntimeError as wrapped:
        message = describe_storage_error(wrapped)
    assert message == f"storage error: No space left on device (ENOSPC): {tmp_path / 'video.mp4'}"
    assert describe_storage_error(ValueError("not storage")) is None
    assert describe_storage_error(OSError(errno.ECONNRESET, "reset")) is None
