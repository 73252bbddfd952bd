"""The opt-in switches for frontends written against the older worker: off by default, honoured when on."""

from __future__ import annotations

from pathlib import Path

import pytest

from source.db.models import NewTask, TaskStatus
from tests.orchestrators.conftest import run_in_process

T2V = {"model": "tiny_t2v", "prompt": "a red cat", "resolution": "32x32", "video_length": 5,
       "num_inference_steps": 2, "seed": 1}


def test_an_unknown_task_type_fails_by_default_and_names_the_known_ones(sqlite_store, tmp_path):
    task = sqlite_store.add_task(NewTask("my_custom_gen", T2V))
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.FAILED and "unknown task type 'my_custom_gen'" in row.error_message


def test_legacy_unknown_task_types_generates_an_unknown_type_with_a_model(sqlite_store, tmp_path):
    task = sqlite_store.add_task(NewTask("my_custom_gen", T2V))
    no_model = sqlite_store.add_task(NewTask("my_other_type", {"prompt": "x"}))
    run_in_process(sqlite_store, tmp_path / "out", legacy_unknown_task_types=True)
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.result["generated_as"] == "generate_video" and row.result["model"] == "tiny_t2v"
    assert Path(row.output_location).suffix == ".mp4" and Path(row.output_location).is_file()
    other = sqlite_store.get_task(no_model)
    assert other.status is TaskStatus.FAILED and "unknown task type 'my_other_type'" in other.error_message


def test_legacy_output_location_writes_files_form_and_error_text_on_sqlite(sqlite_store, tmp_path):
    """Through the real worker process: outputs under <db folder>/public/files, output_location
    "files/<name>", a dependant reads that form back, and a failed row carries its error in output_location."""
    from tests.helpers import run_worker

    video = sqlite_store.add_task(NewTask("t2v", T2V))
    frame = sqlite_store.add_task(NewTask("extract_frame", {"input_video_task_id": video, "frame_index": 0},
                                          dependant_on=video))
    broken = sqlite_store.add_task(NewTask("t2v", {**T2V, "video_length": "many"}))
    done = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--legacy-output-location", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    public = sqlite_store.path.resolve().parent / "public"
    for task in (video, frame):
        row = sqlite_store.get_task(task)
        assert row.status is TaskStatus.COMPLETE, row.error_message
        assert row.output_location.startswith("files/") and (public / row.output_location).is_file()
    failed = sqlite_store.get_task(broken)
    assert failed.status is TaskStatus.FAILED
    assert failed.output_location == failed.error_message and "video_length" in failed.error_message


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres_store", "postgres_adopted_store"])
def test_legacy_output_location_writes_the_error_text_on_postgres(request, backend, tmp_path):
    """Through the real worker process, on our table and on the adopted web-app table: a failed row carries
    its error in output_location; a finished one keeps its plain path (files/<name> is SQLite's form)."""
    from tests.helpers import run_worker

    store = request.getfixturevalue(backend)
    broken = store.add_task(NewTask("t2v", {**T2V, "video_length": "many"}))
    fine = store.add_task(NewTask("ping", {}))
    done = run_worker(store._conninfo, tmp_path / "out", "--once", "--legacy-output-location", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    failed = store.get_task(broken)
    assert failed.status is TaskStatus.FAILED and "video_length" in failed.error_message
    assert failed.output_location == failed.error_message
    ping = store.get_task(fine)
    assert ping.status is TaskStatus.COMPLETE and Path(ping.output_location).is_absolute()


@pytest.mark.postgres
def test_legacy_output_location_writes_the_error_text_over_the_supabase_api(supabase_api_store, tmp_path):
    broken = supabase_api_store.add_task(NewTask("t2v", {**T2V, "video_length": "many"}))
    run_in_process(supabase_api_store, tmp_path / "out", legacy_output_location=True)
    failed = supabase_api_store.get_task(broken)
    assert failed.status is TaskStatus.FAILED and failed.output_location == failed.error_message


def test_switches_are_off_by_default(sqlite_store, tmp_path):
    broken = sqlite_store.add_task(NewTask("t2v", {**T2V, "video_length": "many"}))
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(broken)
    assert row.status is TaskStatus.FAILED and row.output_location is None


def test_legacy_output_location_reaches_the_rows_housekeeping_fails_too(store, tmp_path):
    """Every backend: a row failed by the dependency cascade (not by its own run) carries its error in
    output_location as well; without the switch it does not."""
    broken = store.add_task(NewTask("t2v", {**T2V, "video_length": "many"}))
    behind = store.add_task(NewTask("ping", {}, dependant_on=broken))
    run_in_process(store, tmp_path / "out", legacy_output_location=True)
    row = store.get_task(behind)
    assert row.status is TaskStatus.FAILED and broken in row.error_message
    assert row.output_location == row.error_message


def test_errors_to_output_location_changes_only_failed_rows(store):
    failed = store.add_task(NewTask("ping", {}))
    done = store.add_task(NewTask("ping", {}))
    for task_id in (failed, done):
        assert store.claim_next_task("w", lease_seconds=30).id == task_id
    assert store.fail_task(failed, "w", error_message="boom")
    assert store.complete_task(done, "w", output_location="/out/done.json", result=None)
    assert store.errors_to_output_location([failed, done, "00000000-0000-4000-8000-000000000000"]) == 1
    assert store.get_task(failed).output_location == "boom"
    assert store.get_task(done).output_location == "/out/done.json"
    assert store.errors_to_output_location([failed]) == 0  # already there
