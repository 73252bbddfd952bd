"""Disks do not fill up: uploaded outputs and _work folders are removed, old rows are purged with their
files, the saved log rotates."""

from __future__ import annotations

import logging
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import source.cli.tasks as task_cli
from source.db.models import NewTask, TaskStatus
from source.task_files.paths import WORK_FOLDER, task_stem
from tests.helpers import http_server, run_worker
from tests.pg_fixtures import SERVICE_KEY


def _video_bytes(tmp_path: Path) -> bytes:
    from source.media.write import write_video

    path = write_video(np.linspace(0, 1, 5)[:, None, None, None] * np.ones((5, 32, 32, 3)), tmp_path / "in.mp4", 8)
    return Path(path).read_bytes()


def _server_for(data: bytes) -> type[BaseHTTPRequestHandler]:
    class VideoServer(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args):
            pass

    return VideoServer


def files_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()} \
        if folder.exists() else {}


@pytest.mark.postgres
@pytest.mark.parametrize("keep", [False, True], ids=["default", "keep-local-and-debug"])
def test_output_folder_returns_to_its_starting_size_after_many_uploaded_tasks(fake_supabase, supabase_api_store,
                                                                                tmp_path, keep):
    out = tmp_path / "out"
    (out / "unrelated").mkdir(parents=True)
    (out / "unrelated" / "keep.txt").write_text("an operator's file")
    before = files_under(out)
    with http_server(_server_for(_video_bytes(tmp_path))) as base:
        ids = [supabase_api_store.add_task(NewTask("extract_frame", {"input_video_path": f"{base}/clip{i}.mp4",
                                                                     "frame_index": i % 5}, project_id="p"))
               for i in range(8)]
        extra = ("--keep-local", "--debug") if keep else ()
        done = run_worker(tmp_path / "unused.db", out, "--db-type", "supabase", "--supabase-url", fake_supabase.url,
                          "--once", "--allow-private-urls", *extra, env={"SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY},
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for task_id in ids:
        row = supabase_api_store.get_task(task_id)
        assert row.status is TaskStatus.COMPLETE, row.error_message
        assert row.output_location.startswith(fake_supabase.url)
        assert fake_supabase.object_file("image_uploads", f"p/{task_id}/{Path(row.output_location).name}")
    after = files_under(out)
    if not keep:
        assert after == before  # every output uploaded then removed, every downloaded input removed
    else:
        assert all(any(name.startswith(task_stem(t)) for name in after) for t in ids)
        assert all((out / WORK_FOLDER / task_stem(t)).is_dir() for t in ids)


def test_sqlite_worker_removes_a_tasks_work_folder_when_it_ends_but_keeps_the_output(sqlite_store, tmp_path):
    out = tmp_path / "out"
    with http_server(_server_for(_video_bytes(tmp_path))) as base:
        ok = sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": f"{base}/a.mp4"}))
        bad = sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": f"{base}/b.mp4",
                                                              "frame_index": 99}))
        done = run_worker(sqlite_store.path, out, "--once", "--allow-private-urls")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sqlite_store.get_task(ok).status is TaskStatus.COMPLETE
    assert sqlite_store.get_task(bad).status is TaskStatus.FAILED  # frame 99 of 5: failed after the download
    assert Path(sqlite_store.get_task(ok).output_location).is_file()  # local mode: the output is the result
    assert not (out / WORK_FOLDER / task_stem(ok)).exists() and not (out / WORK_FOLDER / task_stem(bad)).exists()


def _finish(store, task_id: str, *, fail: bool = False) -> None:
    claimed = store.claim_next_task("w", lease_seconds=30)
    assert claimed is not None and claimed.id == task_id
    if fail:
        store.fail_task(task_id, "w", error_message="boom")
    else:
        store.complete_task(task_id, "w", output_location=f"/tmp/{task_id}.png", result={})


def test_purge_deletes_old_ended_rows_but_keeps_what_an_unfinished_row_needs(store):
    done = store.add_task(NewTask("ping", {}, priority=9))
    _finish(store, done)
    failed = store.add_task(NewTask("ping", {}, priority=8))
    _finish(store, failed, fail=True)
    needed = store.add_task(NewTask("ping", {}, priority=7))
    _finish(store, needed)
    waiting = store.add_task(NewTask("ping", {}, dependant_on=needed, priority=-1))
    queued = store.add_task(NewTask("ping", {}, priority=-2))
    time.sleep(0.05)

    assert store.purge_tasks(older_than_seconds=3600, statuses=[TaskStatus.COMPLETE, TaskStatus.FAILED]) == []
    preview = store.purge_tasks(older_than_seconds=0, statuses=[TaskStatus.COMPLETE, TaskStatus.FAILED],
                                dry_run=True)
    assert {r.task_id for r in preview} == {done, failed}
    assert store.get_task(done) is not None  # a dry run deletes nothing
    only_failed = store.purge_tasks(older_than_seconds=0, statuses=[TaskStatus.FAILED])
    assert [(r.task_id, r.status) for r in only_failed] == [(failed, TaskStatus.FAILED)]
    purged = store.purge_tasks(older_than_seconds=0, statuses=[TaskStatus.COMPLETE, TaskStatus.FAILED])
    assert [(r.task_id, r.output_location) for r in purged] == [(done, f"/tmp/{done}.png")]
    assert store.get_task(done) is None and store.get_task(failed) is None
    for kept in (needed, waiting, queued):
        assert store.get_task(kept) is not None


def test_tasks_purge_deletes_rows_and_their_files_under_the_output_root_only(sqlite_store, tmp_path):
    out = tmp_path / "out"
    inside = out / "old_output.png"
    outside = tmp_path / "elsewhere.png"
    for path in (inside, outside):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
    ids = []
    for location in (inside, outside):
        task_id = sqlite_store.add_task(NewTask("ping", {}))
        claimed = sqlite_store.claim_next_task("w", lease_seconds=30)
        sqlite_store.complete_task(claimed.id, "w", output_location=str(location), result={})
        ids.append(task_id)
    leftover = out / WORK_FOLDER / task_stem(ids[0])
    leftover.mkdir(parents=True)
    (leftover / "guide.mp4").write_bytes(b"x")
    time.sleep(0.05)
    args = ["purge", "--db-file", str(sqlite_store.path), "--older-than", "0s", "--main-output-dir", str(out)]
    runner = CliRunner()
    preview = runner.invoke(task_cli.cli, [*args, "--dry-run"])
    assert preview.exit_code == 0, preview.output
    assert "would delete 2 rows" in preview.output and inside.exists() and leftover.exists()
    result = runner.invoke(task_cli.cli, args)
    assert result.exit_code == 0, result.output
    assert "deleted 2 rows and 2 local files/folders" in result.output
    assert not inside.exists() and not leftover.exists()
    assert outside.exists()  # a row's text never decides what is deleted outside the output root
    assert all(sqlite_store.get_task(t) is None for t in ids)


@pytest.mark.parametrize("bad", [("--older-than", "soon"), ("--older-than", "1d", "--status", "Queued")])
def test_tasks_purge_refuses_bad_ages_and_unfinished_statuses(sqlite_store, bad):
    result = CliRunner().invoke(task_cli.cli, ["purge", "--db-file", str(sqlite_store.path), *bad])
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_saved_log_rotates_by_size(tmp_path):
    from source.logging_utils import configure_logging

    saved = tmp_path / "logs" / "worker.log"
    try:
        configure_logging("json", save_path=str(saved), save_max_bytes=2000, save_backups=2)
        for index in range(200):
            logging.getLogger("rotation-test").warning("line %d %s", index, "x" * 50)
    finally:
        configure_logging("console")
    assert saved.stat().st_size <= 2000
    rotated = sorted(p.name for p in saved.parent.iterdir())
    assert rotated == ["worker.log", "worker.log.1", "worker.log.2"]
